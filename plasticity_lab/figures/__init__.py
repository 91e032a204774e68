"""The book's layer: what its chapters call to draw the study and to look inside its networks.

Everything below this package — the environments, PPO, the conditions, the runner, the stored results and the
statistics of :mod:`plasticity_lab.stats` — is the study itself and imports nothing from here. This layer only
draws what those give it, or runs a condition's own code on a copy of a population and reports what changed; it
holds no statistics of its own. Its figures are plotly figures (interactive on the book's static pages and in
Colab), seaborn panels and ipywidgets explorers; importing this package imports none of those libraries — a
chapter imports the modules it needs, e.g. ``from plasticity_lab.figures import curves, resets``.

Shared by every chapter

* :mod:`~plasticity_lab.figures.style` — colours, the plotly template, axis labels, titles and study captions.
* :mod:`~plasticity_lab.figures.tables` — the checks and per-seed reductions of the figures over rounds.
* :mod:`~plasticity_lab.figures.studies` — stored studies: where they are, loading them, and what a section can
  show of a study that holds only some of its conditions so far.

Figures (plotly)

* :mod:`~plasticity_lab.figures.environment` — levels, observations, level pools and shifts (chapters 2, 3), and
  the random-walk inputs later chapters evaluate networks on (chapters 6, 7, 9, 10).
* :mod:`~plasticity_lab.figures.coinrun` — CoinRun's frames on train and test levels, and under *permute*.
* :mod:`~plasticity_lab.figures.montezuma` — Montezuma's Revenge: the game's frames, what RND rewards, and a stored
  study's curves (chapter 13).
* :mod:`~plasticity_lab.figures.ppo` — PPO's clipped objective and GAE (chapter 2).
* :mod:`~plasticity_lab.figures.curves` — learning curves, normalised reward, its read-out, the diagnostics and
  the epochs after a shift (chapters 2–10).
* :mod:`~plasticity_lab.figures.comparisons` — conditions compared: separation per round, round means, the
  condition summary, coefficient sweeps, rankings, gaps by scale and the diagnostics' scatter (chapters 4–11).

Panels and explorers

* :mod:`~plasticity_lab.figures.panels` — static seaborn panels of the regressions and intervals (chapter 12).
* :mod:`~plasticity_lab.figures.widgets` — ipywidgets explorers for a live kernel (chapters 3, 8, 11).

One module per chapter, for what that chapter's cells compute

* :mod:`~plasticity_lab.figures.resets` — chapter 6, resets and plasticity injection at a shift.
* :mod:`~plasticity_lab.figures.regularisation` — chapter 7, the regularisers on their own.
* :mod:`~plasticity_lab.figures.soft_shrink_perturb` — chapter 8, soft shrink+perturb without learning.
* :mod:`~plasticity_lab.figures.architecture` — chapter 9, LayerNorm and CReLU.
* :mod:`~plasticity_lab.figures.redo` — chapter 10, dormant units and their recycling.
* :mod:`~plasticity_lab.figures.scale` — chapter 14, the stored studies' scale and measured cost against the paper's.
"""
