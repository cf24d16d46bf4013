"""Your own image in a generator's latent space: the projector (`project`) and the inversion encoders."""
