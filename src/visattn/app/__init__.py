"""The application layer: the ``visattn`` command and what only it uses.

``cli`` assembles the commands; each command (``summary``, ``bench``, ``zoo``, ``train``, ``evaluate``,
``export``) lives in its own module and imports none of the others; ``common`` (argument parsing, progress bar,
tables, exit codes), ``data``, ``weights``, ``timing`` and ``report`` sit below them. Library errors become exit
codes here and nowhere else.
"""
