"""The `alexnet` command line: one module per command, on top of `training` and `service`.

Each command module has `get_args_parser()` and `main(args)`: it parses its arguments and
calls library functions of `training`, `service` or `core`; no command calls another
command. `main.py` dispatches `alexnet COMMAND`; `python -m alexnet COMMAND` is the same
(`torchrun ... -m alexnet train ...` for several GPUs). `default_model.py` is the one
pipeline that spans both packages (generated images -> training -> export -> gallery),
used by `alexnet quickstart` and by the bench.
"""
