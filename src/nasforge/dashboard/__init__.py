"""``nasforge dashboard`` and ``nasforge report``: look at runs instead of reading them.

:mod:`.data` reads run directories (read-only, while a search writes), :mod:`.plots`
makes the plotly figures both the dashboard and the report show, :mod:`.svg` draws
architectures, :mod:`.app` is the Starlette app and :mod:`.report` the single-file HTML.
Needs the ``dashboard`` extra (``pip install nasforge[dashboard]``).
"""
