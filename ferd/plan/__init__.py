"""What a run will do, decided before any work: the stage graph declared once (:mod:`ferd.plan.graph`), the one
resolved plan (:mod:`ferd.plan.resolve`) and the presets by name (:mod:`ferd.plan.presets`). Importing the
package imports none of them (``ferd --help`` reads the graph without torch)."""
