"""Optimization: LARS and the parameter groups (:mod:`byol.optim.optimizers`), and the schedules as pure
functions of the step (:mod:`byol.optim.schedules`: warmup + cosine lr, the target's tau, lr scaling).

Nothing is imported here, so that :mod:`byol.optim.schedules` stays importable without torch (the budget
planner is pure Python).
"""
