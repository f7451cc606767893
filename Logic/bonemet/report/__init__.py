"""Self-contained HTML reports (:mod:`bonemet.report.html`) and their figures (:mod:`bonemet.report.figures`)."""

from bonemet.report.html import Report

__all__ = ["Report"]
