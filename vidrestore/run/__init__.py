"""Executors: how one input is run, and how many inputs and segments are spread over workers.

Modules import downwards only, in this order (top first):

- ``restore``: ``restore_paths``: inputs -> tasks -> an executor -> a summary
- ``ray``: the tasks on a Ray cluster's actors (each calls ``run_task``)
- ``local``: the tasks on this machine's workers
- ``tasks``: work items, and ``run_task``, the one way a task is run
- ``segments``: long videos cut at keyframes (plan), each rendered alone (render), joined (join),
  with a manifest for resume (manifest)
- ``file``: one input: ``open_reader``, ``writer_for``, and ``drive()``, the one loop from reader
  through the stages to the writer
"""
