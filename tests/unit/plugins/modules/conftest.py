"""Run a module's main() in-process: its exit_json/fail_json end the run with a Done result."""

import pytest

from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


class Done(Exception):
    """How a module run ended: ``failed`` and the result it returned."""

    def __init__(self, failed, result):
        super().__init__(result.get("msg"))
        self.failed = failed
        self.result = result


@pytest.fixture
def run_module(monkeypatch):
    """run_module(module, args) -> Done: the module's main() with ``args`` as its module arguments."""

    def exit_json(self, **result):
        raise Done(False, result)

    def fail_json(self, **result):
        raise Done(True, result)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def run(module, args):
        with patch_module_args(args):
            with pytest.raises(Done) as done:
                module.main()
        return done.value

    return run
