"""The feedback page's parts, without nbgrader: maths as MathML, the kit's preprocessor.

The whole page, as nbgrader writes it for a graded class, is tested in test_nbgrader.py."""

import xml.etree.ElementTree as ET

import nbformat

from autograder import feedback

MATHML = "{http://www.w3.org/1998/Math/MathML}"
DOUBLE_STRUCK_R = "\u211d"  # what \mathbb{R} stands for


def test_inline_maths_become_mathml():
    root = ET.fromstring(feedback.latex_to_mathml(r"x_t \in \mathbb{R}^D", "inline"))
    assert root.tag == f"{MATHML}math" and root.get("display") == "inline"
    text = "".join(root.itertext())
    assert DOUBLE_STRUCK_R in text and "\\" not in text
    assert [e.tag for e in root.iter() if e.tag in (f"{MATHML}msub", f"{MATHML}msup")] == [
        f"{MATHML}msub", f"{MATHML}msup"]


def test_display_maths_become_a_block():
    root = ET.fromstring(feedback.latex_to_mathml(r"\frac{\partial L}{\partial a}", "block"))
    assert root.get("display") == "block"
    assert root.find(f".//{MATHML}mfrac") is not None


def test_latex_the_converter_cannot_read_stays_legible():
    html = feedback.latex_to_mathml(r"\left( x < y", "inline")  # no \right
    assert html == '<code class="tex">\\left( x &lt; y</code>'


def test_markdown_maths_are_rendered_and_code_is_left_alone():
    exporter = feedback.FeedbackExporter()
    template = exporter.environment.from_string("{{ source | markdown2html }}")
    html = template.render(source="Loss $L = \\sum_t m_t$ where `$x$` is code.\n\n$$a = b$$",
                           cell={}, resources={})
    assert html.count("<math") == 2
    assert 'display="inline"' in html and 'display="block"' in html
    assert "<code>$x$</code>" in html
    assert "\\sum" not in html and "$L" not in html


def _cell(source, grade_id, outputs=(), **nbgrader):
    cell = nbformat.v4.new_code_cell(source, metadata={"nbgrader": {"grade_id": grade_id, **nbgrader}})
    cell.outputs = list(outputs)
    return cell


def test_kit_feedback_names_units_and_drops_the_score_value_of_grade_cells():
    stream = nbformat.v4.new_output("stream", name="stdout", text="forward: 0/5 - why\n")
    score = nbformat.v4.new_output("execute_result", data={"text/plain": "0"}, execution_count=None)
    other = nbformat.v4.new_code_cell("1 + 1")
    other.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    nb = nbformat.v4.new_notebook(cells=[
        _cell("def rnn_forward(): ...", "rnn_forward", solution=True, grade=False),
        _cell("# autograded", "rnn_forward_autograded", [stream, score], grade=True, solution=False),
        other,
    ])
    nb, resources = feedback.KitFeedback().preprocess(nb, {})
    assert [o.output_type for o in nb.cells[1].outputs] == ["stream"]
    assert nb.cells[1].outputs[0].text == "forward: 0/5 - why\n"
    assert [o.output_type for o in nb.cells[2].outputs] == ["execute_result"]  # not a grade cell
    assert resources[feedback.UNIT_NAMES] == {"rnn_forward": "rnn_forward",
                                              "rnn_forward_autograded": "rnn_forward"}
