"""`kubectl simtask`: the command-line tool, a thin layer over `simtask.sdk`."""
