#!/usr/bin/env python3
"""Lists the longest function bodies in C++ sources, longest first.

Usage: scripts/long-functions.py [--top N] [--over LINES] PATH...
A function's length runs from the first line of its signature to its closing brace.
Comments, strings and preprocessor lines are skipped when braces are counted; lambdas and
local classes count as part of the function that holds them. Exit 1 when --over is given
and some function is longer.
"""
import argparse
import os
import re
import sys

NON_FUNCTION = re.compile(r'^\s*(template\s*<.*>\s*)?(namespace|class|struct|union|enum|extern)\b')


def strip(text):
    """Blanks out comments, string and char literals, keeping newlines."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
            out.append(' ' * (j - i))
            i = j
        elif text.startswith('/*', i):
            j = text.find('*/', i + 2)
            j = n if j < 0 else j + 2
            out.append(''.join('\n' if ch == '\n' else ' ' for ch in text[i:j]))
            i = j
        elif text.startswith('R"', i):
            m = re.match(r'R"([^(]*)\(', text[i:])
            end = ')' + (m.group(1) if m else '') + '"'
            j = text.find(end, i)
            j = n if j < 0 else j + len(end)
            out.append(''.join('\n' if ch == '\n' else ' ' for ch in text[i:j]))
            i = j
        elif c in '"\'':
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == '\\' else 1
            out.append(c + ' ' * (j - i - 1) + c)
            i = j + 1
        else:
            out.append(c)
            i += 1
    return ''.join(out)


def functions(path):
    with open(path, encoding='utf-8', errors='replace') as f:
        text = strip(f.read())
    lines = [('' if l.lstrip().startswith('#') else l) for l in text.split('\n')]
    stack = []  # what each open brace is: 'scope' (namespace/class) or 'body'
    pending, pending_line = '', None  # text since the last ; { or } at scope level
    found = []
    for no, line in enumerate(lines, 1):
        for ch in line:
            if ch == '{':
                if all(k[0] == 'scope' for k in stack):
                    head = pending.strip()
                    if NON_FUNCTION.match(head) or '(' not in head or head.endswith('='):
                        stack.append(('scope' if NON_FUNCTION.match(head) else 'other', 0, ''))
                    else:
                        name = re.findall(r'([\w:~<>]+)\s*\(', head)
                        stack.append(('body', pending_line or no, name[0] if name else '?'))
                else:
                    stack.append(('inner', 0, ''))
                pending, pending_line = '', None
            elif ch == '}':
                kind, start, name = stack.pop() if stack else ('scope', 0, '')
                if kind == 'body':
                    found.append((no - start + 1, path, start, name))
                pending, pending_line = '', None
            elif ch == ';':
                if all(k[0] == 'scope' for k in stack):
                    pending, pending_line = '', None
            else:
                if all(k[0] == 'scope' for k in stack):
                    if not ch.isspace() and pending_line is None:
                        pending_line = no
                    pending += ch
        if all(k[0] == 'scope' for k in stack):
            pending += ' '
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--top', type=int, default=10)
    ap.add_argument('--over', type=int, default=0)
    ap.add_argument('paths', nargs='+')
    args = ap.parse_args()
    files = []
    for p in args.paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                files += [os.path.join(root, n) for n in names if n.endswith(('.cc', '.h', '.cu'))]
        else:
            files.append(p)
    found = sorted((f for path in sorted(files) for f in functions(path)), reverse=True)
    for length, path, start, name in found[:args.top]:
        print(f'{length:5d}  {path}:{start}  {name}')
    if args.over and any(f[0] > args.over for f in found):
        sys.exit(1)


if __name__ == '__main__':
    main()
