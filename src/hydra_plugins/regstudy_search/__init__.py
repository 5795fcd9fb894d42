"""regstudy's Hydra sweeper ``hydra/sweeper=search``: the batched Optuna search
(:mod:`regstudy.search`) launched by any Hydra launcher. Found by Hydra's plugin scan of
the ``hydra_plugins`` namespace package."""
