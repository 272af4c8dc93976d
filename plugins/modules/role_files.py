#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) mxedge.matrix contributors
# SPDX-License-Identifier: Apache-2.0
"""Module mxedge.matrix.role_files: a role's directories and files in one call."""

DOCUMENTATION = r"""
module: role_files
version_added: 0.1.0
short_description: The directories, key files and rendered files of a role of mxedge.matrix in one call
description:
  - Internal to the roles of mxedge.matrix (the homeserver's files, the documents a proxy answers itself); not part
    of the collection's interface (its options may change).
  - Does in one module call what a loop of M(ansible.builtin.file), M(ansible.builtin.copy) and
    M(ansible.builtin.template) tasks does in one call per item, with the same result on the host.
  - I(directories) are created (missing parents too, with the same owner, group and mode, as
    M(ansible.builtin.file) with C(state=directory) does) and given their owner, group and mode.
  - I(files) are written when their content differs (atomically, through a temporary file in the
    same directory that gets its owner, group and mode before it replaces the file), then given
    their owner, group and mode. With I(validate) the temporary file is checked first, as
    M(ansible.builtin.template) does; a failed check fails the task with C(failed to validate) and
    the command's C(stdout) and C(stderr), and leaves the file as it was.
  - I(secrets) are files whose content is never shown. With I(content) they are written like
    I(files). With I(sources) their content is made of files already on the host (copies of a
    certificate and key, or one PEM file of both). With I(generate) they are created once with a random token (64 URL-safe
    characters) and never rewritten. With I(create_command) that command makes the file once
    when it is missing. With none of these, the file must exist (created by an earlier task) and
    only gets its owner, group and mode. In check mode nothing is generated or run, and a file that
    must already exist but does not is skipped.
  - I(absent) paths are removed first when they exist (a file, a link, or a directory with everything in it),
    as M(ansible.builtin.file) with C(state=absent) does.
  - Check mode reports what a real run would change and changes nothing; diff mode shows the
    content of I(files) and the owner, group and mode changes, never the content of I(secrets).
author:
  - mxedge developers (@mxedge)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: partial
    details:
      - The content of I(secrets) is never shown.
  platform:
    platforms: posix
options:
  absent:
    description: Paths that must not exist, removed before anything else is done.
    type: list
    elements: path
    default: []
  directories:
    description: Directories, in order (a parent before its children).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      owner:
        description: Owner (a user name).
        type: str
        required: true
      group:
        description: Group (a group name).
        type: str
        required: true
      mode:
        description: Octal mode, as a string such as C("0640").
        type: raw
        required: true
  files:
    description: Files with their content, shown in diff mode.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The whole content of the file.
        type: str
        required: true
      validate:
        description: Command that checks the new content before it is live; C(%s) is the temporary file.
        type: str
      owner:
        description: Owner (a user name).
        type: str
        required: true
      group:
        description: Group (a group name).
        type: str
        required: true
      mode:
        description: Octal mode, as a string such as C("0640").
        type: raw
        required: true
  secrets:
    description: Files whose content is never shown (keys, secrets, files holding passwords).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path.
        type: path
        required: true
      content:
        description: The whole content of the file; omit it for I(sources), I(generate), I(create_command) or an existing file.
        type: str
      sources:
        description:
          - Files on the host whose text, without the whitespace around it, makes the content, one after the other,
            each ending with a newline (a copy of a certificate or key, or a chain and its key in one PEM file).
          - Mutually exclusive with I(content). A missing source fails the task, naming it; in check mode the
            item is skipped (an earlier task would make the source).
        type: list
        elements: path
      generate:
        description: Create the file once with a random token when it is missing.
        type: bool
        default: false
      create_command:
        description: Command (argv) that creates the file once when it is missing, e.g. a key generator.
        type: list
        elements: str
      validate:
        description: Command that checks new I(content) before it is live; C(%s) is the temporary file.
        type: str
      owner:
        description: Owner (a user name).
        type: str
        required: true
      group:
        description: Group (a group name).
        type: str
        required: true
      mode:
        description: Octal mode, as a string such as C("0640").
        type: raw
        required: true
"""

EXAMPLES = r"""
- name: Create the homeserver directories
  mxedge.matrix.role_files:
    directories:
      - {path: /etc/synapse, owner: root, group: synapse, mode: "0750"}

- name: Write the keys, secrets and rendered files
  mxedge.matrix.role_files:
    secrets:
      - path: /etc/synapse/signing.key
        create_command: [/opt/synapse/venv/bin/generate_signing_key, -o, /etc/synapse/signing.key]
        owner: root
        group: synapse
        mode: "0640"
      - {path: /etc/synapse/form_secret, generate: true, owner: root, group: synapse, mode: "0640"}
      - path: /etc/haproxy/certs/matrix.pem
        sources: [/etc/ssl/example/fullchain.pem, /etc/ssl/example/privkey.pem]
        owner: root
        group: root
        mode: "0600"
    files:
      - {path: /etc/synapse/log_config.yaml, content: "version: 1\n", owner: root, group: synapse, mode: "0640"}

- name: Install a proxy's files, without those of an earlier layout
  mxedge.matrix.role_files:
    absent: [/etc/nginx/mxedge]
    files:
      - {path: /etc/nginx/conf.d/mxedge-matrix.conf, content: "# server blocks\n", owner: root, group: root, mode: "0644"}
"""

RETURN = r"""
changed_paths:
  description: The paths created, written or given another owner, group or mode (in check mode, that would be).
  returned: always
  type: list
  elements: str
"""

import os
import secrets as _secrets
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

TOKEN_BYTES = 48  # secrets.token_urlsafe(48): 64 characters, as the role always generated

_ATTRS = dict(
    owner=dict(type="str", required=True),
    group=dict(type="str", required=True),
    mode=dict(type="raw", required=True),
)
ARGUMENT_SPEC = dict(
    absent=dict(type="list", elements="path", default=[]),
    directories=dict(type="list", elements="dict", default=[], options=dict(path=dict(type="path", required=True), **_ATTRS)),
    files=dict(
        type="list", elements="dict", default=[],
        options=dict(
            path=dict(type="path", required=True), content=dict(type="str", required=True), validate=dict(type="str"), **_ATTRS
        ),
    ),
    # The paths are shown; each item's content is no_log (below).
    secrets=dict(
        type="list", elements="dict", default=[], no_log=False,
        options=dict(
            path=dict(type="path", required=True),
            content=dict(type="str", no_log=True),
            sources=dict(type="list", elements="path"),
            generate=dict(type="bool", default=False),
            create_command=dict(type="list", elements="str"),
            validate=dict(type="str"),
            **_ATTRS
        ),
        mutually_exclusive=[("content", "sources")],
    ),
)


class Files:
    """Applies the items one by one; records changed paths and diffs."""

    def __init__(self, module):
        self.module = module
        self.changed_paths = []
        self.diffs = []

    def _file_args(self, item, path):
        return self.module.load_file_common_arguments(
            dict(path=path, owner=item["owner"], group=item["group"], mode=item["mode"])
        )

    def _attributes(self, item, path):
        """Owner, group and mode of an existing path (or the would-be path in check mode)."""
        diff = dict(before=dict(path=path), after=dict(path=path))
        changed = self.module.set_fs_attributes_if_different(self._file_args(item, path), False, diff=diff)
        if changed:
            self._changed(path, diff if diff["before"] != dict(path=path) else None)
        return changed

    def _changed(self, path, diff=None):
        if path not in self.changed_paths:
            self.changed_paths.append(path)
        if diff is not None:
            self.diffs.append(diff)

    def absent(self, path):
        if not os.path.lexists(path):
            return
        kind = "directory" if os.path.isdir(path) and not os.path.islink(path) else "file"
        self._changed(path, dict(before=dict(path=path, state=kind), after=dict(path=path, state="absent")))
        if self.module.check_mode:
            return
        try:
            if kind == "directory":
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as exc:
            self.module.fail_json(msg="cannot remove %s: %s" % (path, to_native(exc)), path=path)

    def directory(self, item):
        path = item["path"]
        if os.path.lexists(path) and not os.path.isdir(path):
            self.module.fail_json(msg="%s exists and is not a directory" % path, path=path)
        # Missing components are created one by one and each gets the item's attributes
        # (in check mode, one an earlier item would create counts as existing).
        missing = []
        current = path
        while not os.path.lexists(current) and current not in self.changed_paths:
            missing.insert(0, current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for component in missing:
            self._changed(component, dict(before=dict(path=component, state="absent"),
                                          after=dict(path=component, state="directory")))
            if self.module.check_mode:
                continue
            try:
                os.mkdir(component)
            except OSError as exc:
                self.module.fail_json(msg="cannot create %s: %s" % (component, to_native(exc)), path=component)
            self._attributes(item, component)
        if not missing:
            self._attributes(item, path)

    def _read(self, path):
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except OSError as exc:
            self.module.fail_json(msg="cannot read %s: %s" % (path, to_native(exc)), path=path)

    def _validate(self, item, temp):
        command = item.get("validate")
        if not command:
            return
        if "%s" not in command:
            self.module.fail_json(msg="validate must contain %%s: %s" % command, path=item["path"])
        rc, out, err = self.module.run_command(command % temp)
        if rc != 0:
            self.module.fail_json(msg="failed to validate", exit_status=rc, stdout=out, stderr=err, path=item["path"])

    def _write(self, item, path, data):
        directory = os.path.dirname(path)
        try:
            fd, temp = tempfile.mkstemp(prefix=".ansible_tmp", dir=directory)
        except OSError as exc:
            self.module.fail_json(msg="cannot write into %s: %s" % (directory, to_native(exc)), path=path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            # The temporary file is 0600 root; it gets the final attributes before it replaces
            # the file (rename within one directory: atomic, and never readable by others).
            self.module.set_fs_attributes_if_different(self._file_args(item, temp), False)
            self._validate(item, temp)
            os.replace(temp, path)
        except OSError as exc:
            self.module.fail_json(msg="cannot write %s: %s" % (path, to_native(exc)), path=path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)

    def _file(self, item, data, show):
        """Write data when it differs (data None: never rewrite), then the attributes."""
        path = item["path"]
        if os.path.isdir(path):
            self.module.fail_json(msg="%s is a directory" % path, path=path)
        exists = os.path.lexists(path)
        before = self._read(path) if exists and data is not None else None
        if data is not None and before != data:
            diff = None
            if show:
                diff = dict(before_header=path, after_header=path,
                            before=to_native(before or b"", errors="surrogate_or_strict"),
                            after=to_native(data, errors="surrogate_or_strict"))
            self._changed(path, diff)
            if not self.module.check_mode:
                self._write(item, path, data)
            elif not exists:
                return
        if exists or not self.module.check_mode:
            self._attributes(item, path)

    def file(self, item):
        self._file(item, to_bytes(item["content"], errors="surrogate_or_strict"), show=True)

    def _joined(self, sources):
        """The sources' text without the whitespace around each, each ending with a newline; None in check
        mode when one is missing (an earlier task makes it)."""
        parts = []
        for source in sources:
            if not os.path.exists(source):
                if self.module.check_mode:
                    return None
                self.module.fail_json(msg="%s does not exist (a source of a file to write)" % source, path=source)
            parts.append(self._read(source).strip() + b"\n")
        return b"".join(parts)

    def secret(self, item):
        path = item["path"]
        if item["sources"]:
            data = self._joined(item["sources"])
            if data is not None:
                self._file(item, data, show=False)
        elif item["content"] is not None:
            self._file(item, to_bytes(item["content"], errors="surrogate_or_strict"), show=False)
        elif os.path.lexists(path):
            self._file(item, None, show=False)
        elif item["generate"]:
            self._changed(path)
            if not self.module.check_mode:
                self._write(item, path, to_bytes(_secrets.token_urlsafe(TOKEN_BYTES) + "\n"))
        elif item["create_command"]:
            self._changed(path)
            if not self.module.check_mode:
                rc, out, err = self.module.run_command(item["create_command"])
                if rc != 0 or not os.path.lexists(path):
                    self.module.fail_json(msg="%s did not create %s" % (item["create_command"][0], path),
                                          exit_status=rc, stdout=out, stderr=err, path=path)
                self._attributes(item, path)
        elif not self.module.check_mode:
            self.module.fail_json(msg="%s does not exist (it is created by an earlier task)" % path, path=path)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    files = Files(module)
    for path in module.params["absent"]:
        files.absent(path)
    for item in module.params["directories"]:
        files.directory(item)
    for item in module.params["secrets"]:
        files.secret(item)
    for item in module.params["files"]:
        files.file(item)
    result = dict(changed=bool(files.changed_paths), changed_paths=files.changed_paths)
    if module._diff and files.diffs:
        result["diff"] = files.diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
