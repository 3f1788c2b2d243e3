# -*- coding: utf-8 -*-
# Copyright: sipguard maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Edits of UFW's own rules files (before.rules, before6.rules, after.rules, after6.rules).

``ufw_port`` with ``edit_ufw_files`` disables a line that admits the port (commented out with a
marker naming the run), or, when the line admits other ports too, puts a blocking line ahead of it
in the same chain. With ``docker`` it adds a marked block to after.rules / after6.rules that sends
Docker's ``DOCKER-USER`` chain through UFW's forward chain and drops the published ports, matched
on the port the client connected to (conntrack's original destination port: Docker may map 5060
to another container port).

Which line to edit is decided by the evaluator (ufw_plan walks the simulated rule set and names
the before/after rule that admitted); this module only changes text. A file that does not parse
is never edited. Pure functions; runs on target Python 3.8+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.sipguard.firewall.plugins.module_utils.netfilter import (
    NetfilterParseError,
    parse_iptables_save,
)

# UfwHost.rule_files[family] is (before, after); these are their paths.
RULE_FILES = {(4, "before"): "/etc/ufw/before.rules", (4, "after"): "/etc/ufw/after.rules",
              (6, "before"): "/etc/ufw/before6.rules", (6, "after"): "/etc/ufw/after6.rules"}
FILE_ORDER = (RULE_FILES[(4, "before")], RULE_FILES[(6, "before")], RULE_FILES[(4, "after")],
              RULE_FILES[(6, "after")])
DOCKER_CHAIN = "DOCKER-USER"
FORWARD_CHAINS = {4: "ufw-user-forward", 6: "ufw6-user-forward"}
DOCKER_BEGIN = "# BEGIN sipguard.firewall docker"
DOCKER_END = "# END sipguard.firewall docker"
_RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class FileEditError(ValueError):
    """A rules file cannot be edited safely; the message names the file and what to do."""


def marker(run_id):
    """The prefix of a line this collection commented out: ``# sipguard <run_id>: ``."""
    if not _RUN_ID.match(str(run_id or "")):
        raise FileEditError("run id %r is not a name (letters, digits, '.', '_', '-')" % (run_id,))
    return "# sipguard %s: " % run_id


def parse_rules_file(text, path):
    """``{table: {chain: Chain}}`` of a rules file; FileEditError when it does not parse."""
    try:
        return parse_iptables_save(text or "", source=path)
    except NetfilterParseError as exc:
        raise FileEditError("%s does not parse, so it is not edited: %s" % (path, exc))


def _line_of(text, lineno):
    return (text or "").splitlines(True)[lineno - 1]


def block_line(chain, proto, port, method, comment):
    """The iptables-restore line that blocks ``port``/``proto`` in ``chain``."""
    target = "-j DROP"
    if method == "reject":
        target = "-j REJECT --reject-with tcp-reset" if proto == "tcp" else "-j REJECT"
    return '-A %s -p %s --dport %d -m comment --comment "%s" %s' % (chain, proto, port, comment, target)


def admits_only(rule, proto, port):
    """Whether ``rule`` (a netfilter Rule) admits nothing but ``port``/``proto``: one destination
    port, that protocol, no multiport list. Such a line can be commented out; any other line that
    admits the port also serves other traffic and gets a block ahead of it instead."""
    negated, value = rule.basics.get("proto") or (False, "")
    if negated or value != proto:
        return False
    ports = []
    for _module, opts in rule.matches:
        for opt, (neg, values) in opts.items():
            if opt in ("--dport", "--destination-port") and not neg:
                ports.extend(values)
            elif opt in ("--dports", "--destination-ports", "--ports", "--port", "--dport", "--destination-port"):
                return False  # a list, a range or a negated port: other ports too
    return ports == [str(port)]


def comment_out(text, lineno, run_id):
    """``text`` with line ``lineno`` commented out with the run's marker."""
    lines = (text or "").splitlines(True)
    lines[lineno - 1] = marker(run_id) + lines[lineno - 1]
    return "".join(lines)


def insert_before(text, lineno, new_line, run_id, what):
    """``text`` with ``new_line`` (and a marker comment saying why) ahead of line ``lineno``."""
    lines = (text or "").splitlines(True)
    lines[lineno - 1:lineno - 1] = ["%sblocks %s ahead of the next line, which admits other ports too\n"
                                    % (marker(run_id), what), new_line + "\n"]
    return "".join(lines)


def check_editable(text, path, chain):
    """A chain whose rules are placed by ``-I`` is not edited: a line put ahead of another in the
    text would not end up ahead of it in the chain."""
    for raw in (text or "").splitlines():
        words = raw.split()
        if len(words) > 1 and words[0] in ("-I", "--insert") and words[1] == chain:
            raise FileEditError("%s inserts into %s with -I, so a line cannot be put ahead of another safely; "
                                "edit it by hand" % (path, chain))


def edit_admitting_line(text, path, chain, index, proto, port, method, comment, run_id):
    """Disable the ``index``-th rule (1-based) of filter ``chain`` in ``text``, which admits ``port``/``proto``.

    Returns ``(new text, edit)`` where ``edit`` is ``{file, line, action, text}``: ``commented``
    when the line admits only that port, ``blocked`` (a blocking line inserted ahead) otherwise.
    """
    tables = parse_rules_file(text, path)
    rules = tables.get("filter", {}).get(chain)
    if rules is None or not 1 <= index <= len(rules.rules):
        raise FileEditError("%s has no rule %d in filter chain %s" % (path, index, chain))
    check_editable(text, path, chain)
    rule = rules.rules[index - 1]
    old = _line_of(text, rule.line).rstrip("\n")
    if admits_only(rule, proto, port):
        new_text = comment_out(text, rule.line, run_id)
        edit = {"file": path, "line": rule.line, "action": "commented", "text": old}
    else:
        new_line = block_line(chain, proto, port, method, comment)
        new_text = insert_before(text, rule.line, new_line, run_id, "%d/%s" % (port, proto))
        edit = {"file": path, "line": rule.line, "action": "blocked", "text": old, "inserted": new_line}
    parse_rules_file(new_text, path)  # what we write must parse
    return new_text, edit


def docker_block(family, targets, method):
    """The after.rules block (``docker: true``) for ``targets`` ([(port, proto, comment)]).

    ``DOCKER-USER`` is Docker's hook for the admin's rules (FORWARD jumps to it before Docker's own
    ACCEPTs). Declaring it in after.rules makes every UFW start and reload flush and refill it
    (iptables-restore -n flushes a chain it declares). The published SIP ports are dropped on the
    port the client connected to (``--ctorigdstport``, with ``--ctstate DNAT``: only connections
    that were translated, so the containers' own outgoing SIP traffic passes); the rest goes
    through UFW's forward chain, so ``ufw route`` rules apply to Docker's traffic too.
    """
    lines = [DOCKER_BEGIN + " (ufw_port docker: true; see docs/change-transaction.md to remove it)",
             "*filter",
             ":%s - [0:0]" % FORWARD_CHAINS[family],
             ":%s - [0:0]" % DOCKER_CHAIN]
    for port, proto, comment in targets:
        target = "-j DROP"
        if method == "reject":
            target = "-j REJECT --reject-with tcp-reset" if proto == "tcp" else "-j REJECT"
        lines.append('-A %s -p %s -m conntrack --ctstate DNAT --ctdir ORIGINAL --ctorigdstport %d '
                     '-m comment --comment "%s" %s' % (DOCKER_CHAIN, proto, port, comment, target))
    lines += ["-A %s -j %s" % (DOCKER_CHAIN, FORWARD_CHAINS[family]),
              "-A %s -j RETURN" % DOCKER_CHAIN,
              "COMMIT",
              DOCKER_END, ""]
    return "\n".join(lines)


def split_docker_block(text):
    """``(text without the block, the block or None)``; FileEditError when the markers are broken."""
    text = text or ""
    start = text.find(DOCKER_BEGIN)
    if start < 0:
        if DOCKER_END in text:
            raise FileEditError("'%s' without '%s'" % (DOCKER_END, DOCKER_BEGIN))
        return text, None
    end = text.find(DOCKER_END, start)
    if end < 0 or text.find(DOCKER_BEGIN, start + 1) >= 0:
        raise FileEditError("the sipguard docker block is not closed by '%s' (or appears twice)" % DOCKER_END)
    end = text.find("\n", end)
    end = len(text) if end < 0 else end + 1
    return text[:start] + text[end:], text[start:end]


def with_docker_block(text, path, block):
    """``text`` with the sipguard docker block set to ``block`` (appended; an old one replaced)."""
    parse_rules_file(text, path)
    try:
        rest, _old = split_docker_block(text)
    except FileEditError as exc:
        raise FileEditError("%s: %s; fix the file by hand" % (path, exc))
    if rest and not rest.endswith("\n"):
        rest += "\n"
    new = rest + ("\n" if rest and not rest.endswith("\n\n") else "") + block
    parse_rules_file(new, path)
    return new


def without_docker_block(text):
    """``text`` without the sipguard docker block (what removing it means)."""
    rest, block = split_docker_block(text)
    if block is None:
        return text
    return rest[:-1] if rest.endswith("\n\n") else rest
