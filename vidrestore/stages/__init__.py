"""The face stages, one module each, in the order frames meet them; :mod:`vidrestore.stages.assemble`
wires them from a config.

- ``detect``: face detectors (RetinaFace on the device, CenterFace on the CPU) and batching over frames
- ``track``: linking faces into tracks, filling short gaps, smoothing landmarks
- ``upscale``: the whole frame through Real-ESRGAN (``output.scale``)
- ``align``: small faces upscaled on their crop; every face aligned, in batched warps
- ``restore``: a group of frames restored in batches, with an fp32 retry (drives align, fuse, paste)
- ``fuse``: temporal fusion of each track's restored face with its history
- ``paste``: restored faces warped back into their own regions and composited
- ``networks``: the networks behind narrow batch-in, batch-out interfaces
- ``assemble``: loading the models once and chaining the stages
"""
