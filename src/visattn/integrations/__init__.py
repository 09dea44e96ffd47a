"""Integrations with the tools users plug blocks into. Each module imports its optional dependency and is imported
only by the user: ``import visattn.integrations.ultralytics`` (YOLO YAMLs), ``import visattn.integrations.timm``
(``timm.create_model("visattn_...")``). The core library never imports them."""
