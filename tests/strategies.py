"""Hypothesis strategies shared by the property tests: hostile text and arbitrary JSON events."""

from __future__ import annotations

from hypothesis import strategies as st

# Text that has broken parsers somewhere: line breaks of every kind, quotes and escapes,
# control characters, lone surrogates, byte-order marks, forged syslog headers, templates.
HOSTILE_TEXT = [
    "line\nbreak\r\n",
    "carriage\rreturn",
    'quote " backslash \\',
    "nul \x00 bell \x07 esc \x1b[31m del \x7f",
    "\x85 \u2028 \u2029 \t \x0b \x0c",
    "\ud800 lone \udfff surrogates",
    "<134>1 2020-01-01T00:00:00Z forged siem-exporter 1 signins - {}",
    "12 octet count lookalike",
    "\ufeffBOM",
    "Zürich 東京 😀 \u202e",
    "%msg% $!all-json ${VAR} #012",
    '{"value": []}',
    "@odata.nextLink",
    "",
    " ",
]

text = st.text() | st.sampled_from(HOSTILE_TEXT)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=30,
)
# Any JSON object an API could send as one event.
json_events = st.dictionaries(text, json_values, max_size=8)
