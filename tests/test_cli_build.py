"""One config build per command: a single run composes its config once and validates it once."""

from __future__ import annotations

import pytest


def test_a_single_run_composes_and_validates_its_config_once(tmp_path, monkeypatch):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    import scaleflow.validation as validation
    from scaleflow import cli

    counts = {"compose": 0, "validate": 0}
    load, validate = ConfigLoaderImpl.load_configuration, validation.validate

    def counted_load(self, *args, **kwargs):
        counts["compose"] += 1
        return load(self, *args, **kwargs)

    def counted_validate(cfg):
        counts["validate"] += 1
        return validate(cfg)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counted_load)
    monkeypatch.setattr(validation, "validate", counted_validate)
    monkeypatch.chdir(tmp_path)
    cli.main(["mode=plugins", f"hydra.run.dir={tmp_path / 'run'}"])
    assert (tmp_path / "run" / "plugins.json").exists()
    assert counts == {"compose": 1, "validate": 1}


def test_the_cli_keeps_no_module_level_state():
    import ast
    import inspect

    from scaleflow import cli

    tree = ast.parse(inspect.getsource(cli))
    assigned = [t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
    assert all(name.isupper() or name == "log" for name in assigned), assigned  # constants only
    assert not any(isinstance(node, ast.Global) for node in ast.walk(tree))


@pytest.mark.parametrize("argv, implied", [(["strategy=tpu"], "hardware=tpu"), (["strategy=mirrored"], None)])
def test_implied_choices_are_added_once(argv, implied):
    from scaleflow.config.implied import with_implied

    once = with_implied(argv)
    assert with_implied(once) == once  # applying again adds nothing
    assert (implied in once) if implied else once == argv
