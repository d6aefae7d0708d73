"""The trainer: the processes ``torchrun`` (locally) or a Kubeflow Trainer TrainJob (on the cluster)
starts, one per GPU or CPU slot. It imports :mod:`model` and the core library (:mod:`t2v`), never a
component: a training component writes a job file and launches ``python -m trainer.<worker> --job URI``.

* :mod:`trainer.dit_worker` -- flow-matching training of the DiT (the t2i, t2vi and t2v stages).
"""
