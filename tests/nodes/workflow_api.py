"""Our node definitions in ComfyUI's /object_info shape, UI-workflow validation, and UI -> API conversion.

ComfyUI's frontend saves workflows in the "UI" format (nodes with positions, `widgets_values` lists and
a link table) and queues them in the "API" format (`{node_id: {class_type, inputs}}`). The example
workflows ship in the UI format; the tests validate them against our node classes and convert them to
API prompts, for our own runner and for a real ComfyUI server, with the rules the frontend uses:
widget inputs take `widgets_values` in declaration order, and an INT named seed/noise_seed or any
input with `control_after_generate` is followed by one extra value (the "fixed"/"randomize" control).
"""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def node_info(cls: type) -> dict[str, Any]:
    """The /object_info entry of a V1 node class, as ComfyUI's server builds it."""
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {section: list(entries) for section, entries in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    return info


def input_type(spec: Any) -> str:
    """The type name of an input spec: a list (or COMBO with options) is a COMBO."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else kind


def input_options(spec: Any) -> dict[str, Any]:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_values(spec: Any) -> list[Any]:
    kind = spec[0]
    if isinstance(kind, list):
        return kind
    return list(input_options(spec).get("options", []))


def is_widget(spec: Any) -> bool:
    return input_type(spec) in WIDGET_TYPES and not input_options(spec).get("forceInput", False)


def has_control_widget(name: str, spec: Any) -> bool:
    """Whether the frontend adds a "control after generate" widget (one more saved value) after it."""
    kind = input_type(spec)
    opts = input_options(spec)
    if kind == "INT":
        return bool(opts.get("control_after_generate")) or name in ("seed", "noise_seed")
    if kind == "COMBO":
        return bool(opts.get("control_after_generate"))
    return False


def ordered_inputs(info: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(name, spec, required) of the visible inputs in the order the frontend creates widgets."""
    out = []
    for section in ("required", "optional"):
        for name, spec in info["input"].get(section, {}).items():
            out.append((name, spec, section == "required"))
    return out


def widget_values_by_name(node: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """Map a UI node's `widgets_values` onto its widget inputs (control values skipped).

    A workflow saved before optional inputs were added to the end of a node has no values for them;
    the frontend then keeps their defaults, and so does this.
    """
    values = list(node.get("widgets_values") or [])
    out: dict[str, Any] = {}
    i = 0
    for name, spec, required in ordered_inputs(info):
        if not is_widget(spec):
            continue
        if i >= len(values) and not required and "default" in input_options(spec):
            out[name] = input_options(spec)["default"]
            continue
        if i >= len(values):
            raise ValueError(f"node {node['id']} ({node['type']}): no saved value for widget '{name}'")
        out[name] = values[i]
        i += 1
        if has_control_widget(name, spec):
            i += 1
    if i != len(values):
        raise ValueError(
            f"node {node['id']} ({node['type']}): {len(values)} saved widget values, the definition has {i}"
        )
    return out


def types_match(output_type: str, input_type_name: str) -> bool:
    """ComfyUI's link rule: '*' matches anything, comma-separated types match if the sets intersect."""
    if "*" in (output_type, input_type_name):
        return True
    return bool(set(output_type.split(",")) & set(input_type_name.split(",")))


def check_widget_value(name: str, spec: Any, value: Any) -> str | None:
    """A problem with a saved widget value, or None. Mirrors ComfyUI's server-side validation."""
    kind = input_type(spec)
    opts = input_options(spec)
    if kind == "COMBO":
        choices = combo_values(spec)
        return None if value in choices else f"'{name}': {value!r} is not one of {choices}"
    if kind == "BOOLEAN":
        return None if isinstance(value, bool) else f"'{name}': {value!r} is not a boolean"
    if kind == "STRING":
        return None if isinstance(value, str) else f"'{name}': {value!r} is not a string"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"'{name}': {value!r} is not a number"
    if kind == "INT" and int(value) != value:
        return f"'{name}': {value!r} is not an integer"
    if "min" in opts and value < opts["min"]:
        return f"'{name}': {value} is below the minimum {opts['min']}"
    if "max" in opts and value > opts["max"]:
        return f"'{name}': {value} is above the maximum {opts['max']}"
    return None


def validate_ui_workflow(workflow: dict[str, Any], defs: dict[str, dict[str, Any]]) -> list[str]:
    """Every problem ComfyUI would have loading and queueing `workflow` with node definitions `defs`."""
    problems: list[str] = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {}
    for link in workflow["links"]:
        link_id, src, src_slot, dst, dst_slot, ltype = link[:6]
        links[link_id] = (src, src_slot, dst, dst_slot, ltype)
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: refers to a missing node")
            continue
        # The frontend checks both ends against the link table and "fixes" what disagrees (fixBadLinks).
        outs, ins = nodes[src].get("outputs", []), nodes[dst].get("inputs", [])
        if src_slot >= len(outs) or link_id not in (outs[src_slot].get("links") or []):
            problems.append(f"link {link_id}: output slot {src_slot} of node {src} does not list it")
        if dst_slot >= len(ins) or ins[dst_slot].get("link") != link_id:
            problems.append(f"link {link_id}: input slot {dst_slot} of node {dst} is not connected to it")
    for node in workflow["nodes"]:
        where = f"node {node['id']} ({node['type']})"
        if node["type"] not in defs:
            if node["type"] not in ("Note", "MarkdownNote"):
                problems.append(f"{where}: unknown node type")
            continue
        info = defs[node["type"]]
        specs = {name: (spec, required) for name, spec, required in ordered_inputs(info)}
        try:
            values = widget_values_by_name(node, info)
        except ValueError as e:
            problems.append(str(e))
            values = {}
        for name, value in values.items():
            problem = check_widget_value(name, specs[name][0], value)
            if problem:
                problems.append(f"{where}: {problem}")
        linked = set()
        for slot in node.get("inputs", []):
            name = slot["name"]
            if name not in specs:
                problems.append(f"{where}: input '{name}' does not exist")
                continue
            spec = specs[name][0]
            if slot.get("link") is None:
                continue
            linked.add(name)
            src, src_slot, dst, dst_slot, ltype = links.get(slot["link"], (None,) * 5)
            if src is None:
                problems.append(f"{where}: input '{name}' uses missing link {slot['link']}")
                continue
            if dst != node["id"]:
                problems.append(f"{where}: link {slot['link']} does not end at this node")
            src_node = nodes.get(src)
            if src_node is None or src_node["type"] not in defs:
                continue
            outputs = defs[src_node["type"]]["output"]
            if src_slot >= len(outputs):
                problems.append(f"{where}: input '{name}' links to missing output {src_slot} of node {src}")
                continue
            out_type = outputs[src_slot]
            want = input_type(spec)
            if want == "COMBO" or not types_match(out_type, want):
                problems.append(f"{where}: input '{name}' ({want}) is linked to a {out_type} output")
            if ltype != out_type:
                problems.append(f"{where}: link {slot['link']} is typed {ltype}, the output is {out_type}")
        for name, (spec, required) in specs.items():
            if required and not is_widget(spec) and name not in linked:
                problems.append(f"{where}: required input '{name}' is not connected")
        for slot_index, out in enumerate(node.get("outputs", [])):
            outputs = info["output"]
            if slot_index >= len(outputs) or out.get("type") != outputs[slot_index]:
                problems.append(
                    f"{where}: output {slot_index} is {out.get('type')}, the definition says "
                    f"{outputs[slot_index] if slot_index < len(outputs) else 'nothing'}"
                )
    return problems


def ui_to_api(workflow: dict[str, Any], defs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The API prompt the frontend would queue for `workflow` (muted/bypassed and note nodes dropped)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt: dict[str, dict[str, Any]] = {}
    for node in workflow["nodes"]:
        if node["type"] not in defs or node.get("mode", 0) in (2, 4):
            continue
        info = defs[node["type"]]
        inputs: dict[str, Any] = dict(widget_values_by_name(node, info))
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            _, src, src_slot, *_ = links[slot["link"]]
            inputs[slot["name"]] = [str(src), int(src_slot)]
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title") or node["type"]},
        }
    return prompt
