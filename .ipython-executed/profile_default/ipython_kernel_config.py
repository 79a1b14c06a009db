# IPython profile `make executed` runs the notebooks with (IPYTHONDIR=.ipython-executed): figures
# are stored as JPEG at 80 dpi, so the committed executed copies stay under 5 MB each while photos
# of MVTec AD images and maps remain readable. Interactive sessions keep IPython's defaults.
c = get_config()  # noqa: F821 (IPython's config loader defines it)
c.InlineBackend.figure_formats = {"jpeg"}
c.InlineBackend.print_figure_kwargs = {"bbox_inches": "tight", "dpi": 80, "pil_kwargs": {"quality": 85}}
# Progress bars as text rather than widgets: a widget's stored state is megabytes and, without it,
# a reader sees every bar at 0 %. `make executed` then keeps only each bar's last state. Transient
# bars (leave=False, e.g. batches inside an epoch) and bars inside another bar are not shown: as
# text they would leave a line per update, since they redraw with terminal cursor moves a notebook
# cannot replay.
c.InteractiveShellApp.exec_lines = [
    "import tqdm.auto, tqdm.std",
    "class TextProgressBar(tqdm.std.tqdm):\n"
    "    def __init__(self, *args, **kwargs):\n"
    "        nested = any(bar is not self for bar in tqdm.std.tqdm._instances)  # tqdm registers self first\n"
    "        transient = nested or not kwargs.get('leave', True)\n"
    "        super().__init__(*args, **{**kwargs, 'disable': kwargs.get('disable', False) or transient})",
    "tqdm.auto.tqdm = TextProgressBar",
]
