"""nncc.support: infrastructure every other nncc package shares; it imports no other nncc package.

- `errors`: `NnccError` (a one-line message for the user) and `report_errors` (the CLIs' exit path).
- `progress`: progress bars and stage messages on stderr.
- `user_files`: writing the user's files atomically, and refusing to overwrite an input.
- `command_line`: the options and argument types the command-line tools share.
- `check`: inputs for a run, `.npz` reading and writing, and comparing outputs with onnxruntime.

The layering, bottom to top (docs/pipeline.md, "Layering"): `support` <- `runtime` (the machine)
<- `dialects` <- `compiler` and `passes`.
"""
