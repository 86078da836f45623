"""Training: the composition root (:mod:`byol.train.pretrain`: a config -> data, views, method, optimizer,
``Trainer``), the one loop (:mod:`byol.train.loop`) and what only it uses: its checkpointed state
(:mod:`byol.train.state`), the budget planner (:mod:`byol.train.budget`), the other processes
(:mod:`byol.train.replicas`), the collapse and kNN monitors (:mod:`byol.train.monitor`) and the end-of-run
verdict against random init (:mod:`byol.train.verdict`).
"""
