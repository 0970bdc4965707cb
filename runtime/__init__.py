"""nncc.runtime: the accelerator nncc compiles for, and its interpreter.

- `isa`: the one definition of every instruction (`make`, `format_instr`, `encode`, `decode`).
- `program`: `Program` (target + instructions + symbols + DRAM image), `.nnbin` `save`/`load`.
- `assembler`: `.s` text, `assemble` / `disassemble`.
- `interpreter`: `run(program, inputs) -> RunResult` (outputs and counters); `memory`, `semantics`
  and `timing` hold the simulated memories, what each instruction does, and what it costs.
- `report`: `build_report`, `compare_outputs`, `trace_events`, `file_sha256`.
- `cli`: `nncc-run`.
"""
