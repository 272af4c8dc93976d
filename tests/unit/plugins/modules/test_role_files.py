"""plugins/modules/role_files.py (a role's directories and files in one call).

Runs the module on a temporary tree, as the user running the tests (owner and group
are that user's), for real and in check mode, and runs each case twice: the second
run must change nothing.
"""

import grp
import os
import pwd
import stat

import pytest

from ansible_collections.mxedge.matrix.plugins.modules import role_files

OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name
SECRET = "s3cret-value-that-must-never-show-up-anywhere"


@pytest.fixture
def run(run_module):
    """run(check_mode=False, diff=False, **module_args): the module's result (conftest's Done)."""

    def run_with(check_mode=False, diff=False, **args):
        return run_module(role_files, dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff))

    return run_with


def attrs(mode, **item):
    return dict(item, owner=OWNER, group=GROUP, mode=mode)


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_directories_with_their_missing_parents(run, tmp_path):
    media = tmp_path / "data" / "media"
    directories = [attrs("0700", path=str(tmp_path / "etc")), attrs("0750", path=str(media))]
    done = run(directories=directories)
    assert not done.failed, done.result
    assert done.result["changed"] is True
    assert done.result["changed_paths"] == [str(tmp_path / "etc"), str(tmp_path / "data"), str(media)]
    # Like ansible.builtin.file state=directory: created parents get the item's attributes too.
    assert (mode_of(tmp_path / "etc"), mode_of(tmp_path / "data"), mode_of(media)) == (0o700, 0o750, 0o750)
    again = run(directories=directories)
    assert again.result == {"changed": False, "changed_paths": []}


def test_directory_mode_is_corrected_and_shown_in_diff(run, tmp_path):
    (tmp_path / "etc").mkdir(mode=0o755)
    done = run(diff=True, directories=[attrs("0750", path=str(tmp_path / "etc"))])
    assert done.result["changed_paths"] == [str(tmp_path / "etc")]
    assert mode_of(tmp_path / "etc") == 0o750
    assert done.result["diff"] == [{"before": {"path": str(tmp_path / "etc"), "mode": "0755"},
                                    "after": {"path": str(tmp_path / "etc"), "mode": "0750"}}]


def test_files_written_when_content_differs(run, tmp_path):
    unit = tmp_path / "synapse.service"
    files = [attrs("0644", path=str(unit), content="[Unit]\nDescription=one\n")]
    done = run(diff=True, files=files)
    assert done.result["changed_paths"] == [str(unit)]
    assert unit.read_text() == "[Unit]\nDescription=one\n" and mode_of(unit) == 0o644
    assert done.result["diff"][0]["after"] == "[Unit]\nDescription=one\n"
    assert run(files=files).result["changed"] is False
    files[0]["content"] = "[Unit]\nDescription=two\n"
    done = run(diff=True, files=files)
    assert done.result["changed_paths"] == [str(unit)]
    assert done.result["diff"][0]["before"] == "[Unit]\nDescription=one\n"
    assert unit.read_text() == "[Unit]\nDescription=two\n"
    assert [p.name for p in tmp_path.iterdir()] == ["synapse.service"], "a temporary file was left behind"


def test_secrets_generated_once_and_given_ones_never_shown(run, tmp_path):
    key = tmp_path / "signing.key"
    key.write_text("ed25519 a_abcd seed\n")
    key.chmod(0o644)
    secrets = [
        attrs("0640", path=str(key)),
        attrs("0640", path=str(tmp_path / "form_secret"), generate=True),
        attrs("0640", path=str(tmp_path / "macaroon_secret_key"), content=SECRET + "\n"),
    ]
    done = run(diff=True, secrets=secrets)
    assert not done.failed, done.result
    assert done.result["changed_paths"] == [str(key), str(tmp_path / "form_secret"), str(tmp_path / "macaroon_secret_key")]
    assert SECRET not in repr(done.result)
    assert key.read_text() == "ed25519 a_abcd seed\n"
    generated = (tmp_path / "form_secret").read_text()
    assert len(generated) == 65 and generated.endswith("\n")
    assert (tmp_path / "macaroon_secret_key").read_text() == SECRET + "\n"
    assert {mode_of(tmp_path / name) for name in ("signing.key", "form_secret", "macaroon_secret_key")} == {0o640}
    again = run(secrets=secrets)
    assert again.result["changed"] is False
    assert (tmp_path / "form_secret").read_text() == generated, "a generated secret was rewritten"


def test_check_mode_reports_and_changes_nothing(run, tmp_path):
    existing = tmp_path / "log_config.yaml"
    existing.write_text("old\n")
    args = dict(
        directories=[attrs("0750", path=str(tmp_path / "etc"))],
        secrets=[attrs("0640", path=str(tmp_path / "etc" / "signing.key")),
                 attrs("0640", path=str(tmp_path / "etc" / "form_secret"), generate=True),
                 attrs("0640", path=str(tmp_path / "etc" / "macaroon_secret_key"), content=SECRET)],
        files=[attrs("0640", path=str(existing), content="new\n"),
               attrs("0644", path=str(tmp_path / "etc" / "unit"), content="x\n")],
    )
    before = sorted((p.name, mode_of(p)) for p in tmp_path.rglob("*"))
    done = run(check_mode=True, **args)
    assert not done.failed, done.result
    # The signing key that does not exist yet (an earlier task makes it) is skipped.
    assert done.result["changed_paths"] == [str(tmp_path / "etc"), str(tmp_path / "etc" / "form_secret"),
                                            str(tmp_path / "etc" / "macaroon_secret_key"), str(existing),
                                            str(tmp_path / "etc" / "unit")]
    assert sorted((p.name, mode_of(p)) for p in tmp_path.rglob("*")) == before
    assert existing.read_text() == "old\n"


@pytest.mark.parametrize(
    ("option", "make", "words"),
    [
        ("directories", "file", "exists and is not a directory"),
        ("files", "dir", "is a directory"),
        ("secrets", None, "does not exist (it is created by an earlier task)"),
    ],
)
def test_failures_name_the_path(run, tmp_path, option, make, words):
    path = tmp_path / "thing"
    if make == "file":
        path.write_text("")
    elif make == "dir":
        path.mkdir()
    item = attrs("0640", path=str(path))
    if option == "files":
        item["content"] = "x"
    done = run(**{option: [item]})
    assert done.failed
    assert done.result["msg"] == f"{path} {words}"


def test_validate_checks_the_new_content_before_it_is_live(run, tmp_path):
    live = tmp_path / "homeserver.yaml"
    live.write_text("good: 1\n")
    check = "grep -q good %s"
    done = run(files=[attrs("0640", path=str(live), content="bad: 2\n", validate=check)])
    assert done.failed
    assert (done.result["msg"], done.result["exit_status"]) == ("failed to validate", 1)
    assert live.read_text() == "good: 1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["homeserver.yaml"], "the rejected file was left behind"
    done = run(secrets=[attrs("0640", path=str(live), content="good: 2\n", validate=check)])
    assert not done.failed, done.result
    assert live.read_text() == "good: 2\n" and mode_of(live) == 0o640


def test_create_command_runs_once(run, tmp_path):
    key = tmp_path / "signing.key"
    item = attrs("0640", path=str(key), create_command=["sh", "-c", f"echo key $$ > {key}"])
    assert run(check_mode=True, secrets=[item]).result["changed_paths"] == [str(key)]
    assert not key.exists()
    done = run(secrets=[item])
    assert done.result["changed_paths"] == [str(key)] and mode_of(key) == 0o640
    made = key.read_text()
    assert run(secrets=[item]).result["changed"] is False
    assert key.read_text() == made, "the key was made again"
    done = run(secrets=[attrs("0640", path=str(tmp_path / "other.key"), create_command=["true"])])
    assert done.failed and done.result["msg"] == f"true did not create {tmp_path / 'other.key'}"


def test_check_mode_reports_a_shared_missing_parent_once(run, tmp_path):
    data, media = tmp_path / "data", tmp_path / "data" / "media"
    directories = [attrs("0700", path=str(data)), attrs("0700", path=str(media))]
    done = run(check_mode=True, diff=True, directories=directories)
    assert done.result["changed_paths"] == [str(data), str(media)]
    assert [d["after"]["path"] for d in done.result["diff"]] == [str(data), str(media)]
    assert not data.exists()


def test_absent_paths_are_removed_first_and_reported(run, tmp_path):
    old_dir = tmp_path / "mxedge"
    (old_dir / "sub").mkdir(parents=True)
    (old_dir / "sub" / "matrix.conf").write_text("old\n")
    old_file = tmp_path / "default"
    old_file.write_text("server {}\n")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    args = dict(absent=[str(old_dir), str(old_file), str(link), str(tmp_path / "never")],
                files=[attrs("0644", path=str(tmp_path / "new.conf"), content="new\n")])
    checked = run(check_mode=True, diff=True, **args)
    assert checked.result["changed_paths"] == [str(old_dir), str(old_file), str(link), str(tmp_path / "new.conf")]
    assert checked.result["diff"][0] == {"before": {"path": str(old_dir), "state": "directory"},
                                         "after": {"path": str(old_dir), "state": "absent"}}
    assert old_dir.is_dir() and old_file.exists() and link.is_symlink(), "check mode removed something"
    done = run(**args)
    assert done.result["changed_paths"] == checked.result["changed_paths"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.conf"]
    assert run(**args).result == {"changed": False, "changed_paths": []}


def test_sources_make_a_copy_or_a_bundle_never_shown(run, tmp_path):
    chain, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    chain.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n\n")
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----")
    bundle, copy = tmp_path / "certs" / "matrix.pem", tmp_path / "certs" / "privkey.pem"
    args = dict(directories=[attrs("0700", path=str(tmp_path / "certs"))],
                secrets=[attrs("0600", path=str(bundle), sources=[str(chain), str(key)]),
                         attrs("0640", path=str(copy), sources=[str(key)])])
    done = run(diff=True, **args)
    assert not done.failed, done.result
    assert done.result["changed_paths"] == [str(tmp_path / "certs"), str(bundle), str(copy)]
    assert SECRET not in repr(done.result)
    # Each source without the whitespace around it, each ending with one newline.
    assert bundle.read_text() == chain.read_text().strip() + "\n" + key.read_text() + "\n"
    assert copy.read_text() == key.read_text() + "\n"
    assert (mode_of(bundle), mode_of(copy)) == (0o600, 0o640)
    assert run(**args).result == {"changed": False, "changed_paths": []}
    key.write_text("-----BEGIN PRIVATE KEY-----\nrenewed\n-----END PRIVATE KEY-----\n")
    assert run(**args).result["changed_paths"] == [str(bundle), str(copy)]
    assert bundle.read_text().endswith("renewed\n-----END PRIVATE KEY-----\n")


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_missing_source_fails_naming_it_or_is_skipped_in_check_mode(run, tmp_path, check_mode):
    target, missing = tmp_path / "matrix.pem", tmp_path / "fullchain.pem"
    done = run(check_mode=check_mode, secrets=[attrs("0600", path=str(target), sources=[str(missing)])])
    if check_mode:
        assert not done.failed and done.result == {"changed": False, "changed_paths": []}
    else:
        assert done.failed and done.result["msg"] == f"{missing} does not exist (a source of a file to write)"
    assert not target.exists()


def test_content_and_sources_exclude_each_other(run, tmp_path):
    done = run(secrets=[attrs("0600", path=str(tmp_path / "x"), content="x", sources=[str(tmp_path / "y")])])
    assert done.failed and "mutually exclusive" in done.result["msg"]
