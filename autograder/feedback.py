"""nbgrader feedback (`make feedback`): the page each student gets back.

nbgrader's ``generate_feedback`` turns each autograded notebook into one HTML file. Here
assignment/nbgrader_config.py gives it the kit's exporter, template and one more
preprocessor, so that the page:

* names the unit of every entry of its index ("rnn_forward (Score: 3.0 / 5.0)"), where
  nbgrader's template says "Test cell" for each (``KitFeedback`` gives the template the names);
* shows no "Out[ ]: 0" under a grade cell: that value is only how ``KitGrader`` hands the
  unit's score to nbgrader's ``SaveAutoGrades``; the page shows the score in the cell's
  heading (``KitFeedback`` drops it);
* wraps the grader's long lines (reasons, the student's exceptions) inside their box
  (feedback_templates/captioning_feedback/);
* shows the notebook's maths offline: the LaTeX is converted to MathML when the page is
  written (latex2mathml, pinned in requirements.txt), which every current browser displays
  without a script. nbconvert's default loads MathJax from a CDN, so a student reading the
  page offline saw raw LaTeX; a local MathJax would not travel with the one HTML file each
  student gets back (embedding it would add megabytes to every page). The template's
  mathjax.html.j2 replaces nbconvert's macro of that name with one that loads nothing.
"""

import html
from pathlib import Path

from jinja2 import pass_context
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor
from traitlets import Bool

from autograder.nbgrader_autograde import GRADE_CELL_SUFFIX

TEMPLATE_NAME = "captioning_feedback"  # a folder of feedback_templates/
# Not index.html.j2: the template extends nbgrader's, which has that name, and a template
# file is looked up in the template folders in order, the kit's first.
TEMPLATE_FILE = "captioning_feedback.html.j2"
TEMPLATE_BASEDIR = Path(__file__).resolve().parent / "feedback_templates"
UNIT_NAMES = "unit_names"  # resources key: {grade_id: unit}, read by the template's index


def nbgrader_template_basedir() -> str:
    """The folder of nbgrader's own feedback template, which the kit's extends."""
    import nbgrader

    return str(Path(nbgrader.__file__).resolve().parent / "server_extensions" / "formgrader" / "templates")


def latex_to_mathml(tex: str, display: str) -> str:
    """MathML for the LaTeX tex (display: "inline" or "block"); the LaTeX itself, escaped and
    marked as code, where the converter cannot read it (still legible, never a broken page)."""
    from latex2mathml.converter import convert  # only feedback needs it: imported here

    try:
        return convert(tex.strip(), display=display)
    except Exception:  # latex2mathml raises its own exception types for unsupported LaTeX
        return f'<code class="tex">{html.escape(tex)}</code>'


class MathMLRenderer(IPythonRenderer):
    """nbconvert's Markdown renderer, with the maths as MathML instead of LaTeX for MathJax."""

    def block_math(self, body: str) -> str:
        return latex_to_mathml(body, "block")

    def inline_math(self, body: str) -> str:
        return latex_to_mathml(body, "inline")

    def latex_environment(self, name: str, body: str) -> str:
        return latex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", "block")


class FeedbackExporter(HTMLExporter):
    """nbgrader's HTML exporter for feedback, rendering Markdown maths with MathMLRenderer."""

    @pass_context  # as nbconvert's: the filter reads the cell's attachments from the context
    def markdown2html(self, context, source):
        """HTMLExporter.markdown2html (nbconvert 7) with MathMLRenderer in place of its renderer."""
        cell = context.get("cell", {})
        renderer = MathMLRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=self.embed_images,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options,
        )
        return MarkdownWithMath(renderer=renderer).render(source)


class KitFeedback(Preprocessor):
    """Before the page is written: names each graded cell's unit for the template's index,
    and drops the score value under the kit's grade cells (see the module's docstring)."""

    # nbgrader registers its converters' preprocessors without enabling them. (nbconvert's
    # base class, not nbgrader's: the HTML exporter configures a trait nbgrader's leaves out.)
    enabled = Bool(True)

    def preprocess(self, nb, resources):
        names = {}
        for cell in nb.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if not grade_id:
                continue
            unit = grade_id.removesuffix(GRADE_CELL_SUFFIX)
            names[grade_id] = unit
            if grade_id.endswith(GRADE_CELL_SUFFIX) and cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
        resources[UNIT_NAMES] = names
        return nb, resources
