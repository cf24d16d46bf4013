"""comfyui-nada: StyleGAN-NADA nodes for ComfyUI (the engine lives in `nada/`, the nodes in `nodes/`)."""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain module, not as ComfyUI imports a pack (e.g. pytest collecting a checkout whose
    # folder name is not a valid package name): there is no package to import the nodes from.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

# The live loss curve on the NADA Adapt node (web/js) and the node docs (web/docs/<NodeId>.md).
WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
