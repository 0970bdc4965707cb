"""nncc.runtime: the machine nncc compiles for, and its interpreter.

- `target`: the machine description (`Target`: cores, units, memories, timing), read from TOML;
  the presets are in `targets/`.
- `isa`: the one definition of every instruction (`make`, `format_instr`, `encode`, `decode`).
- `program`: `Program` (target + instructions + symbols + DRAM image), `.nnbin` bytes.
- `assembler`: `.s` text, `assemble` / `disassemble`.
- `program_file`: `save` / `load` a program as `.nnbin` or `.s`, by the file's suffix.
- `interpreter`: `run(program, inputs) -> RunResult` (outputs and counters); `memory`, `semantics`
  and `timing` hold the simulated memories, what each instruction does, and what it costs.
- `faults`: `MachineFault`, a program the machine refuses.
- `report`: `build_report`, `compare_outputs`, `trace_events`, `file_sha256`.
- `cli`: `nncc-run`.

Layering (docs/pipeline.md, "Layering"): the runtime imports only `nncc.support`; the dialects
and the compiler build on it, never the other way round (tests/test_layering.py).
"""
