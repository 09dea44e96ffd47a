"""See what the attention does: attention maps recorded as data, analyses and figures of them, and Grad-CAM that
reads visattn's channels-last maps the right way round.

* :func:`record_attention` - the attention of every block of a model (or of one block) during an ordinary forward;
* :func:`query_map`, :func:`mean_distance`, :func:`branch_output`, :func:`spectrum` - what the maps say;
* :func:`target_layers`, :func:`reshape_transform`, :func:`channels_first_view` - for pytorch-grad-cam and Captum;
  :class:`GradCam` - the same computation without them;
* :mod:`visattn.explain.views` - matplotlib figures (``visattn explain`` writes them for an image).
"""

from .gradcam import GradCam, channels_first_view, reshape_transform, target_layers, to_channels_first
from .maps import branch_output, gate_strength, mean_distance, query_map, spectrum
from .record import AttentionMap, AttentionRecord, record_attention

__all__ = ["AttentionMap", "AttentionRecord", "GradCam", "branch_output", "channels_first_view", "gate_strength",
           "mean_distance", "query_map", "record_attention", "reshape_transform", "spectrum", "target_layers",
           "to_channels_first"]
