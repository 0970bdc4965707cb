"""The back end's decisions, recorded once in the module and read by every later pass.

Not a pass: the helpers `partition-cores`, `tile-layers` and `lower-to-isa` share.

    builtin.module attributes {tile.target = {name = "edge", clock_ghz = 2.000000e-01 : f64, cores = 1 : i64, ...},
                               tile.cores = 1 : i64, tile.order = "scan", tile.objective = "cycles",
                               tile.buffers = 2 : i64} { ... }

| attribute | recorded by (option) | read by |
| --- | --- | --- |
| `tile.target` | the first of partition-cores, tile-layers, lower-to-isa (`target`, `target-set`) | the others |
| `tile.cores` | partition-cores (`cores`) | tile-layers, lower-to-isa |
| `tile.order` | tile-layers, else lower-to-isa (`tile-order`) | lower-to-isa |
| `tile.objective` | tile-layers, else lower-to-isa (`tile-objective`) | lower-to-isa |
| `tile.buffers` | double-buffer | lower-to-isa |
| `tile.sized_for` | tile-layers (`buffers=1`) | double-buffer (refuses such tiles) |

`tile.target` is the whole resolved target description (the TOML table, `--target-set`
applied), so a module says what it was compiled for. A pass handed no option uses the recorded
value; handed the same value, it goes on; handed a different one, it refuses in one line naming
itself, the option, the recorded value and the given one: tiles chosen for one machine or order
are not silently lowered for another. Hand edits of the attributes are legitimate: the passes
follow the edited value (checked like an option).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from xdsl.dialects.builtin import IntegerAttr, ModuleOp, StringAttr, i64

from nncc.runtime.target import Target, apply_overrides, load_target, target_from_dict, target_to_dict
from nncc.support.errors import NnccError

TARGET_ATTR = "tile.target"
CORES_ATTR = "tile.cores"
ORDER_ATTR = "tile.order"
OBJECTIVE_ATTR = "tile.objective"
BUFFERS_ATTR = "tile.buffers"
SIZED_FOR_ATTR = "tile.sized_for"  # 1 when tile-layers{buffers=1} sized the tiles to fill whole memories

DEFAULT_TARGET = "vector"
ORDERS = ("naive", "scan", "tsp")
OBJECTIVES = ("cycles", "dram")


def walk_order(order: str) -> str:
    """The order tile search and nest building assume: tsp is Scan's tiles and nests, whose
    conv/gemm loops tile-layers then walks as a path (`compiler/codegen/tile_order.py`)."""
    return "scan" if order == "tsp" else order


def module_target(module: ModuleOp, pass_name: str, target: str = "", target_set: tuple[str, ...] = ()) -> Target:
    """The target `module` records, or else the one the options name (`vector` without them),
    recorded now. Options that name another target than the recorded one are refused."""
    from nncc.compiler.codegen.isa_module import from_attribute, to_attribute

    attr = module.attributes.get(TARGET_ATTR)
    if attr is None:
        resolved = load_target(target or DEFAULT_TARGET, target_set)
        module.attributes[TARGET_ATTR] = to_attribute(target_to_dict(resolved))
        return resolved
    recorded = target_from_dict(from_attribute(attr, TARGET_ATTR), f"module attribute {TARGET_ATTR}")
    if target or target_set:
        given = target_to_dict(load_target(target, target_set) if target else target_from_dict(
            apply_overrides(target_to_dict(recorded), target_set, f"{pass_name}: target-set"), f"{pass_name}: target-set"))
        if given != target_to_dict(recorded):
            options = [f"target={target}"] * bool(target) + [f"target-set={','.join(target_set)}"] * bool(target_set)
            raise refusal(pass_name, options, f"{TARGET_ATTR} recorded in the module (target "
                                              f"{describe_difference(target_to_dict(recorded), given)})")
    return recorded


def decide(module: ModuleOp, pass_name: str, attr_name: str, option: str, given: str | int,
           default: str | int, allowed: tuple = ()) -> Any:
    """The decision `attr_name` records (a string or an integer), or else `given` (falsy: not
    given) or `default`, recorded now. A given value other than the recorded one is refused."""
    attr = module.attributes.get(attr_name)
    if attr is None:
        value = given or default
        check_allowed(pass_name, option, value, allowed)
        module.attributes[attr_name] = StringAttr(value) if isinstance(value, str) else IntegerAttr(value, i64)
        return value
    recorded = recorded_value(attr_name, attr, type(default))
    check_allowed(pass_name, attr_name, recorded, allowed)
    if given and given != recorded:
        check_allowed(pass_name, option, given, allowed)
        shown = f'"{recorded}"' if isinstance(recorded, str) else recorded
        raise refusal(pass_name, [f"{option}={given}"], f"{attr_name} = {shown} recorded in the module")
    return recorded


def recorded_value(attr_name: str, attr, kind: type) -> str | int:
    if kind is str and isinstance(attr, StringAttr):
        return attr.data
    if kind is int and isinstance(attr, IntegerAttr):
        return attr.value.data
    example = '"scan"' if kind is str else "4 : i64"
    raise NnccError(f"module attribute {attr_name} must be {'a string' if kind is str else 'an integer'}, "
                    f"e.g. {attr_name} = {example}, not {attr}")


def check_allowed(pass_name: str, name: str, value, allowed: tuple) -> None:
    if allowed and value not in allowed:
        choices = ", ".join(allowed[:-1]) + f" or {allowed[-1]}" if len(allowed) > 1 else allowed[0]
        raise NnccError(f"{pass_name}: {name} must be {choices}, not {value!r}")


def refusal(pass_name: str, options: list[str], recorded: str) -> NnccError:
    plural = len(options) > 1
    return NnccError(f"{pass_name}: option{'s' * plural} {' '.join(options)} differ{'s' * (not plural)} from "
                     f"{recorded}; leave the option{'s' * plural} out to use it")


def describe_difference(recorded: dict, given: dict) -> str:
    """`edge` (the given target has another name), else `vector with dram.bandwidth_gbps = 42.6, not 1.0`."""
    name = recorded.get("name")
    if given.get("name") != name:
        return name
    theirs = dict(flattened(given))
    changed = [f"{key} = {value}, not {theirs.get(key, '(unset)')}" for key, value in flattened(recorded)
               if theirs.get(key) != value]
    changed += [f"{key} unset, not {value}" for key, value in theirs.items() if key not in dict(flattened(recorded))]
    return f"{name} with {'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}"


def flattened(table: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys as `--target-set` writes them (memories by name: `memory.AM.size_bytes`)."""
    if isinstance(table, dict):
        for key, value in table.items():
            yield from flattened(value, f"{prefix}{key}.")
    elif isinstance(table, list) and table and all(isinstance(entry, dict) and "name" in entry for entry in table):
        for entry in table:
            yield from flattened({k: v for k, v in entry.items() if k != "name"}, f"{prefix}{entry['name']}.")
    else:
        yield prefix[:-1], table
