"""The face stages, one module each; :mod:`vidrestore.stages.assemble` wires them from a config.

- ``detect``: face detectors (RetinaFace on the device, CenterFace on the CPU) and batching over frames
- ``track``: linking faces into tracks, filling short gaps, smoothing landmarks
- ``restore``: upscaling small faces on their crop, alignment, batched restoration, paste-back
- ``frame_upscale``: the whole frame through Real-ESRGAN (``output.scale``)
- ``networks``: the networks behind narrow batch-in, batch-out interfaces
- ``assemble``: loading the models once and chaining the stages
"""
