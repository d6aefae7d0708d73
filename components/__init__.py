"""The pipeline's stages: one folder per stage (``stage.py``: what it does; ``component.py``: its KFP
component), on top of the stage framework (:mod:`components.framework`, :mod:`components.runtime`).
No stage folder imports another; what two share lives in the framework or the core library (:mod:`t2v`).
"""
