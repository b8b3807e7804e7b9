"""Rendering: NoCloud seed files and build requests from a DesiredHost (Jinja, StrictUndefined).

Public API: :class:`RenderSettings`, :class:`RenderedHost`, :class:`Renderer`,
:func:`render_host`, :func:`template_problems`.
"""

from __future__ import annotations

from reconciler.render.renderer import (
    DEFAULT_PUBLIC_URL,
    RenderedHost,
    Renderer,
    RenderSettings,
    TemplateError,
    TemplateRefused,
    render_host,
    template_problems,
)

__all__ = ["DEFAULT_PUBLIC_URL", "RenderSettings", "RenderedHost", "Renderer", "TemplateError",
           "TemplateRefused", "render_host", "template_problems"]
