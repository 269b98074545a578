"""The application on top of the library: the ``ridurre`` command line, configuration files and
presets, pruning jobs and the train -> prune -> finetune workflow, reports, plots and the demo.

The library (every other package of ``ridurre``) never imports this package.
"""
