"""Fuzzing the program loaders: a corrupted `.nnbin` or `.s` file never escapes as a traceback.

Small valid programs (the examples, one with a weight image, one in training mode) are mutated with
seeded random edits: byte flips and truncations, header JSON fields replaced by bad values with the
checksum recomputed (so the header validation itself is exercised), instruction slots overwritten,
assembly numbers made negative or huge, directives dropped or duplicated. `nncc-run` must exit
0, 1, 2 or 3 with at most one line on stderr.
"""

from __future__ import annotations

import base64
import json
import random
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from nncc.runtime.assembler import assemble, disassemble
from nncc.runtime.cli import main
from nncc.runtime.program import MAGIC, VERSION, to_bytes

EXAMPLES = Path(__file__).parents[2] / "examples" / "programs"

BAD_VALUES: list = [-1, -4, 0, 1, 3, 6, 2**31, 2**62, 2**63 - 1, 2**64, 10**10, 10**30, -(2**63), 1.5, -0.0,
                    "x", "", None, True, [], {}, [1], [-4, 4], [[0, 0]], ["a", "b"]]  # fmt: skip
BAD_NUMBERS = ["-4", "-1", "-0x10", "0", "3", "0x7fffffffffffffff", "0xffffffffffffffffff", "99999999999999999999",
               "10000000000", "1e9", "0x40000000", "1,2"]  # fmt: skip
NUMBER = re.compile(r"-?\b(?:0x[0-9a-fA-F]+|\d+)\b")


# --------------------------------------------------------------------------------------------
# Valid programs to start from


def base_programs() -> dict[str, str]:
    """Assembly texts: the examples as written, canonical, with a weight image, in training mode."""
    texts = {path.stem: path.read_text() for path in sorted(EXAMPLES.glob("*.s"))}
    fused = assemble(texts["matmul_bn_relu_fused"])
    rng = np.random.default_rng(0)
    for name in ("W", "scale", "shift"):
        fused.add_data(fused.symbol(name).addr, rng.standard_normal(fused.symbol(name).shape))
    texts["fused_with_data"] = disassemble(fused)
    texts["gemm_canonical"] = disassemble(assemble(texts["gemm_2core"]))
    texts["maxpool_training"] = texts["maxpool"].replace(".mode inference", ".mode training")
    return texts


# --------------------------------------------------------------------------------------------
# Binary mutations


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def split_binary(blob: bytes) -> tuple[dict, bytes]:
    """The header (parsed) and everything after it up to the checksum."""
    header_len = struct.unpack_from("<I", blob, 12)[0]
    return json.loads(blob[16 : 16 + header_len]), blob[16 + header_len : -4]


def join_binary(header: dict, rest: bytes) -> bytes:
    header_bytes = json.dumps(header).encode()
    return with_crc(MAGIC + struct.pack("<II", VERSION, len(header_bytes)) + header_bytes + rest)


def json_paths(value, path=()) -> list[tuple]:
    """Every path to a value inside nested lists and dicts (containers included)."""
    paths = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            paths += json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += json_paths(item, (*path, index))
    return paths


def replaced(value, path: tuple, new):
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = replaced(value[path[0]], path[1:], new)
    return copy


def flip_bytes(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    data = bytearray(blob)
    positions = [rng.randrange(len(data)) for _ in range(rng.randint(1, 4))]
    for position in positions:
        data[position] ^= 1 << rng.randrange(8)
    if rng.random() < 0.3:
        return f"flip {positions} (old crc)", bytes(data)
    return f"flip {positions}", with_crc(bytes(data[:-4]))


def truncate(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    cut = rng.randrange(len(blob))
    if rng.random() < 0.5:
        return f"truncate at {cut}", blob[:cut]
    return f"truncate body at {cut} (crc fixed)", with_crc(blob[: min(cut, len(blob) - 4)])


def edit_header(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    header, rest = split_binary(blob)
    paths = json_paths(header)
    own = [p for p in paths if p and p[0] != "target"]
    path = rng.choice(own if rng.random() < 0.8 else paths)
    new = rng.choice(BAD_VALUES)
    return f"header {list(path)} = {new!r}", join_binary(replaced(header, path, new), rest)


def edit_slot(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    header, rest = split_binary(blob)
    if not header["slot_count"]:
        return edit_header(rng, blob)
    slot = rng.randrange(header["slot_count"])
    new = rng.choice([-1, -4, -(2**63), 2**63 - 1, 2**40, 3, 0, 1, 0x7E])
    slots = bytearray(rest)
    struct.pack_into("<q", slots, 8 * slot, new)
    return f"slot {slot} = {new}", join_binary(header, bytes(slots))


def resize_data(rng: random.Random, blob: bytes) -> tuple[str, bytes]:
    header, rest = split_binary(blob)
    extra = rng.randint(1, 7)
    if header["segments"]:
        header["segments"][-1][1] += extra
    return f"data +{extra} bytes", join_binary(header, rest + bytes(extra))


BINARY_MUTATIONS: list[Callable] = [flip_bytes, truncate, edit_header, edit_header, edit_header, edit_slot, resize_data]


# --------------------------------------------------------------------------------------------
# Assembly mutations


def edit_number(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    candidates = [i for i, line in enumerate(lines) if NUMBER.search(line) and not line.startswith("#")]
    index = rng.choice(candidates)
    matches = list(NUMBER.finditer(lines[index]))
    match = rng.choice(matches)
    new = rng.choice(BAD_NUMBERS)
    line = lines[index]
    edited = [*lines[:index], line[: match.start()] + new + line[match.end() :], *lines[index + 1 :]]
    return f"line {index + 1}: {match.group()} -> {new}", edited


def drop_line(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    index = rng.choice(directive_lines(lines) if rng.random() < 0.6 else range(len(lines)))
    return f"drop line {index + 1}", lines[:index] + lines[index + 1 :]


def duplicate_line(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    index = rng.choice(directive_lines(lines) if rng.random() < 0.6 else range(len(lines)))
    return f"duplicate line {index + 1}", lines[: index + 1] + lines[index:]


def add_data(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    addr = rng.choice(["0x0", "0x4", "-0x4", "0x2", "0x7fffffffffff", "0x1000"])
    payload = base64.b64encode(bytes(rng.randint(1, 9))).decode()
    return f".data {addr} {payload}", [*lines, f".data {addr} {payload}"]


def flip_char(rng: random.Random, lines: list[str]) -> tuple[str, list[str]]:
    index = rng.randrange(len(lines))
    line = lines[index]
    if not line:
        return drop_line(rng, lines)
    position = rng.randrange(len(line))
    char = rng.choice('-0x9,"[] =#.\t{}')
    return f"line {index + 1} col {position}: {char!r}", [*lines[:index], line[:position] + char + line[position + 1 :],
                                                       *lines[index + 1 :]]  # fmt: skip


def directive_lines(lines: list[str]) -> list[int]:
    return [i for i, line in enumerate(lines) if line.startswith(".")]


TEXT_MUTATIONS: list[Callable] = [edit_number, edit_number, edit_number, drop_line, duplicate_line, add_data, flip_char]


# --------------------------------------------------------------------------------------------
# Running


def mutants(seed: int, count: int) -> list[tuple[str, str, bytes]]:
    """`count` (description, suffix, content) mutants, half binary and half assembly."""
    rng = random.Random(seed)
    texts = base_programs()
    binaries = {name: to_bytes(assemble(text)) for name, text in texts.items()}
    result = []
    for number in range(count):
        name = rng.choice(sorted(texts))
        if number % 2:
            what, blob = rng.choice(BINARY_MUTATIONS)(rng, binaries[name])
            result.append((f"{name}.nnbin: {what}", ".nnbin", blob))
        else:
            what, lines = rng.choice(TEXT_MUTATIONS)(rng, texts[name].splitlines())
            result.append((f"{name}.s: {what}", ".s", "\n".join(lines).encode()))
    return result


def run_mutant(path: Path, content: bytes, capsys) -> tuple[int | None, str | None]:
    """The exit code of one mutant's run and what is wrong with it (an escaped exception, a bad exit
    code or message), or None."""
    path.write_bytes(content)
    try:
        code = main([str(path)])
    except BaseException as error:  # noqa: BLE001 - any escape is the bug we look for
        capsys.readouterr()
        return None, f"{type(error).__name__}: {error}"
    err = capsys.readouterr().err
    if code not in (0, 1, 2, 3):
        return code, f"exit code {code}"
    if code in (2, 3) and (err.count("\n") != 1 or "Traceback" in err):
        return code, f"exit {code} with stderr {err!r}"
    return code, None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mutated_programs_exit_cleanly(tmp_path, capsys, seed):
    failures = []
    codes = set()
    for what, suffix, content in mutants(seed, 200):
        code, problem = run_mutant(tmp_path / f"p{suffix}", content, capsys)
        codes.add(code)
        if problem:
            failures.append(f"{what}: {problem}")
    assert failures == []
    assert {0, 3} <= codes  # some mutants still run, others fault: not all stop at the checksum
