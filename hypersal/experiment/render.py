"""sbatch scripts from Jinja templates, where every value is shell-quoted by one helper.

The environment's `finalize` hook passes every `{{ expression }}` through `quote`, so a
template cannot forget to quote: `{{ job.dir }}` with `$(touch x)` in it stays a literal
path. A list renders as several quoted words (`exec {{ job.args }}`). The template itself is
code; values are never code. Undefined variables are errors (StrictUndefined), and so are
values the user set that the template never reads.

Templates written for omnigan's experiment.py ({{cpu}}, {{gpu}}, {{main_partition}}, {{config}},
...) get those variables filled as omnigan.TEMPLATE declares; the sbatch values they are made of
count as used.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from hypersal.errors import UserError, name_of, suggest
from hypersal.experiment import omnigan

BUILTINS = ("job",)  # what hypersal provides to every template; not user-settable
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Text(str):
    """Text hypersal composed itself, checked to be inert, that goes into the script as written
    (an omnigan template's whole `#SBATCH -p` line, or nothing): never a user's value as such."""


def quote(value: Any) -> str:
    """One shell word for a value: inert whatever it holds.

    Plain text -> shlex.quote (single quotes). Text with newlines or other control characters ->
    bash ANSI-C quoting ($'...'), which keeps the value on one line: inside an #SBATCH
    directive a raw newline would start a new line of shell code.
    """
    if isinstance(value, Text):
        return str(value)
    if value is None:
        return "''"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(quote(v) for v in value)
    text = str(value)
    if not _CONTROL.search(text):
        return shlex.quote(text)
    escaped = "".join(_ansi_c(ch) for ch in text)
    return f"$'{escaped}'"


def _ansi_c(ch: str) -> str:
    if ch in "\\'":
        return "\\" + ch
    if _CONTROL.match(ch):
        return {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{ord(ch):02x}")
    return ch


class Template:
    """A parsed template: renders runs and knows which variables it reads."""

    def __init__(self, path: Path | str):
        self.path = Path(path).absolute()
        try:
            source = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError("template not found", file=self.path,
                            fix="pass --template=templates/sbatch.sh or another template file") from None
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, finalize=quote,
                                 keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                                 autoescape=False)
        try:
            parsed = env.parse(source)
            self.variables = meta.find_undeclared_variables(parsed)
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise UserError(f"template syntax error: {e.message}", file=self.path, line=e.lineno,
                            fix="check the {{ }} and {% %} tags on that line") from None
        self.omnigan = omnigan.template_names(self.variables)   # empty: not an omnigan template
        self._output_folder = omnigan.output_is_folder(source)
        # What a user may set under `sbatch:`: what the template reads, less what hypersal fills
        # in, plus the sbatch values the filled variables are made of.
        self.settable = (self.variables - set(BUILTINS) - self.omnigan) | {
            key for name in self.omnigan for key in omnigan.TEMPLATE[name].reads}
        if self.omnigan:
            lines: dict = {}
            for node in parsed.find_all(jinja2.nodes.Name):
                lines.setdefault(node.name, node.lineno)
            omnigan.check_template(self.path, self.variables, lines)
            omnigan.note_template(self.path, self.omnigan, lines, reads_job="job" in self.variables)

    def check_values(self, values: dict, prefix: str = "sbatch", **where) -> None:
        """Every value the user set must be read by the template (or it would be ignored)."""
        for key in values:
            where["key"] = f"{prefix}.{key}"
            if key in BUILTINS:
                raise UserError(f"'{name_of(key)}' is set by hypersal and cannot be an sbatch value",
                                fix="rename or remove it", **where)
            if key in self.omnigan and key not in self.settable:
                var = omnigan.TEMPLATE[key]
                does = "renders empty" if var.instead else f"fills in ({var.means})"
                raise UserError(f"'{key}' is one of omnigan's template variables, which hypersal {does}, "
                                "so it cannot be an sbatch value",
                                fix=f"set {', '.join('sbatch.' + k for k in var.reads)} instead" if var.reads
                                else f"remove it: {var.instead}" if var.instead else "remove it", **where)
            if key not in self.settable:
                used = sorted(self.settable)
                raise UserError(f"the template {self.path.name} does not use the sbatch value "
                                f"'{name_of(key)}', so it would be ignored",
                                fix=f"use one of: {', '.join(used)}.{suggest(key, used)} Or add "
                                    f"{{{{ {key} }}}} to the template", **where)

    def render(self, values: dict, job: dict, **where) -> str:
        filled = omnigan.fill(self.omnigan, values, job, self.path.name, self._output_folder, **where)
        filled = {k: Text(v) if omnigan.TEMPLATE[k].text else v for k, v in filled.items()}
        try:
            return self._template.render({**values, **filled, "job": job})
        except jinja2.UndefinedError as e:
            raise UserError(f"the template {self.path.name} needs a value: {e.message}",
                            fix="set it under `sbatch:` in the experiment file, or give it a "
                                "default in the template with `| default(...)`", **where) from None
        except jinja2.TemplateError as e:
            raise UserError(f"the template {self.path.name} failed to render: {e}",
                            fix="check the template", **where) from None
