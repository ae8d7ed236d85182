"""The models a stranger can use: the `actgrad` command on a reproduced project, and its models
in MLflow (logged on each train run, registered, loaded by a models:/ URI in a fresh process)."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import copy_project, run
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

ACTGRAD = [str(Path(sys.executable).parent / "actgrad")]


@pytest.fixture
def study(reproduced, tmp_path):
    return copy_project(reproduced, tmp_path, runs=True)


def actgrad(path, env, *args, check=True):
    return run([*ACTGRAD, *args], path, env, check=check)


def error(out):
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def test_sample_prints_the_train_stages_names_by_default(reproduced):
    path, env = reproduced
    names = actgrad(path, env, "sample", "kaiming").stdout
    assert names == (path / "reports/samples/kaiming.txt").read_text()
    other = actgrad(path, env, "sample", "kaiming", "-n", "5", "--seed", "1").stdout.split()
    assert len(other) == 5 and other != names.split()[:5]
    # top-k 1 draws the likeliest character each time: the same name whatever the seed
    greedy = {
        actgrad(path, env, "sample", "adam", "-n", "1", "--seed", s, "--top-k", "1").stdout
        for s in ("1", "2", "3")
    }
    assert len(greedy) == 1
    second = actgrad(path, env, "sample", "kaiming", "--trained-seed", "1").stdout
    assert second != names


def notebook_samples(net, vocab, count, seed):
    """The notebook's sampling loop, transcribed: the layers in eval mode, one character at a
    time, until the end token."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for _ in range(count):
        out, context = [], [0] * 3
        while True:
            x = net.C[torch.tensor([context])].view(1, -1)
            for layer in net.layers:
                x = layer(x)
            probs = F.softmax(x, dim=1)
            ix = torch.multinomial(probs, num_samples=1, generator=g).item()
            context = context[1:] + [ix]
            out.append(ix)
            if ix == 0:
                break
        names.append("".join(vocab.chars[i] for i in out[:-1]))
    return names


def test_a_deep_network_samples_as_the_notebook_does(reproduced):
    from actgrad.cli import Project
    from actgrad.deepnet.network import build_net

    path, env = reproduced
    project = Project(path)
    params = project.params
    net = build_net(params.deep["batchnorm"], params.deep_train, 3, 27, torch.Generator())
    net.load(torch.load(path / "models/deep/batchnorm.pt", weights_only=True))
    expected = notebook_samples(net, project.vocab(), 20, params.deep_train.sample_seed)
    assert actgrad(path, env, "sample", "deep/batchnorm").stdout.split("\n")[:-1] == expected
    diverged = actgrad(path, env, "sample", "deep/linear_gain_5_3", check=False)
    assert re.fullmatch(r"Error: deep/linear_gain_5_3 diverged at step \d+: .*", error(diverged))


def score_table(text):
    """{(name, model): (nll, perplexity, rank)} of `actgrad score`'s output."""
    rows = {}
    for line in text.splitlines()[1:]:
        name, model, nll, perplexity, rank = line.split()
        rows[name, model] = (float(nll), float(perplexity), int(rank.split("/")[0]))
    return rows


def test_score_ranks_every_model_by_how_surprised_it_is(reproduced):
    path, env = reproduced
    rows = score_table(actgrad(path, env, "score", "emma", "andrej", "zzzzq", "--all").stdout)
    models = {m for _, m in rows}
    assert {"kaiming", "calibrate", "fold", "deep/batchnorm"} <= models
    assert "deep/linear_gain_5_3" not in models  # diverged
    for name in ("emma", "andrej", "zzzzq"):
        ranked = sorted((rows[name, m][0], m) for m in models)
        assert [rows[name, m][2] for _, m in ranked] == list(range(1, len(models) + 1))
        for m in models:
            nll, perplexity, _ = rows[name, m]
            assert perplexity == pytest.approx(2.718281828**nll, rel=1e-3)
    assert rows["zzzzq", "kaiming"][0] > rows["emma", "kaiming"][0] + 1
    # the folded model is BatchNorm's with the calibrated statistics: the same scores
    assert rows["emma", "fold"][0] == pytest.approx(rows["emma", "calibrate"][0], abs=1e-4)

    bad = actgrad(path, env, "score", "emma", "Zoë", check=False)
    assert error(bad).startswith("Error: 'Zoë' has 'Z', which is not in the vocabulary")


def test_a_missing_model_says_what_to_run(study):
    path, env = study
    (path / "models/kaiming.pt").unlink()
    line = error(actgrad(path, env, "sample", "kaiming", check=False))
    assert line == (
        "Error: models/kaiming.pt: no such file; `dvc pull` fetches it from the DVC remote, or "
        "`make repro` (`dvc repro train@kaiming`) makes it"
    )
    listing = actgrad(path, env, "list").stdout
    assert re.search(
        r"^kaiming +\d\.\d{4} ± \d\.\d{4} +\d\.\d{4} ± \d\.\d{4} +absent$", listing, re.M
    )
    assert re.search(r"^adam .* present, current$", listing, re.M)
    assert re.search(r"^deep/linear_gain_5_3 +diverged +diverged +present, current$", listing, re.M)
    unknown = error(actgrad(path, env, "sample", "nope", check=False))
    assert unknown.startswith("Error: nope: no such model; choose one of baseline, ")


def test_every_model_is_in_mlflow_registered_and_loadable_offline(study, tmp_path):
    path, env = study
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("actgrad")
    params_variants = json.loads(
        run(
            [
                sys.executable,
                "-c",
                "import json, yaml; print(json.dumps(list(yaml.safe_load("
                "open('params.yaml'))['variants'])))",
            ],
            path,
            env,
        ).stdout
    )
    models = client.search_logged_models([exp.experiment_id])
    mlps = [m for m in models if "variant" in m.tags]
    assert {m.tags["variant"] for m in mlps} == set(params_variants)
    for model in models:
        linked = {m.key: m for m in model.metrics}
        assert linked["val_loss"].dataset_name == "split"
        run_ = client.get_run(model.source_run_id)
        stage = ("train@" + model.tags["variant"]) if model in mlps else None
        stage = stage or "deep@" + model.tags["deep_config"]
        assert run_.data.tags["dvc_stage"] == stage
        assert linked["val_loss"].value == run_.data.metrics["val_loss"]
    versions = client.search_model_versions("name = 'actgrad-mlp'")
    assert sorted(v.tags["variant"] for v in versions) == sorted(params_variants)
    champion = client.get_model_version_by_alias("actgrad-mlp", "champion").tags["variant"]
    means = {
        v: json.loads((path / f"metrics/{v}.json").read_text())["mean"]["val_loss"]
        for v in params_variants
    }
    assert champion == min(means, key=means.get)

    # a fresh process loads it by its models:/ URI and scores as `actgrad score` does
    load = (
        "import sys, mlflow.pyfunc, pandas as pd\n"
        "m = mlflow.pyfunc.load_model('models:/actgrad-mlp@champion')\n"
        "print(m.predict(pd.DataFrame({'name': ['emma', 'andrej']})).to_json(orient='records'))\n"
        "print(' '.join(m.predict(pd.DataFrame({'name': ['']}), params={'sample': 4})['name']))\n"
    )
    scores, sampled = run([sys.executable, "-c", load], tmp_path, env).stdout.splitlines()[-2:]
    ours = score_table(actgrad(path, env, "score", "emma", "andrej", "--variant", champion).stdout)
    for row in json.loads(scores):
        assert row["nll_per_char"] == pytest.approx(ours[row["name"], champion][0], abs=1e-4)
    assert sampled.split() == actgrad(path, env, "sample", champion, "-n", "4").stdout.split()

    # every deep config that trained is a version of actgrad-deep, and scores as `actgrad` does
    deep = {v.tags["deep_config"]: v for v in client.search_model_versions("name = 'actgrad-deep'")}
    trained = [
        c
        for c in json.loads(
            run(
                [
                    sys.executable,
                    "-c",
                    "import json, yaml; print(json.dumps(list(yaml.safe_load("
                    "open('params.yaml'))['deep'])))",
                ],
                path,
                env,
            ).stdout
        )
        if not json.loads((path / f"metrics/deep/{c}.json").read_text())["diverged_at_step"]
    ]
    assert sorted(deep) == sorted(trained) and "linear_gain_5_3" not in deep
    load = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        "for uri in sys.argv[1:]:\n"
        "    m = mlflow.pyfunc.load_model(uri)\n"
        "    print(json.dumps(list(m.predict(pd.DataFrame({'name': ['emma']}))['nll_per_char'])))\n"
    )
    uris = [f"models:/actgrad-deep/{deep[c].version}" for c in trained]
    loaded = run([sys.executable, "-c", load, *uris], tmp_path, env).stdout.splitlines()[
        -len(trained) :
    ]
    ours = score_table(actgrad(path, env, "score", "emma", "--all").stdout)
    for config, line in zip(trained, loaded):
        assert json.loads(line)[0] == pytest.approx(ours["emma", f"deep/{config}"][0], abs=1e-4)

    names = tmp_path / "names.csv"
    names.write_text("name\nemma\nandrej\n")
    predict = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "predict",
        "-m",
        "models:/actgrad-mlp@champion",
        "-i",
        str(names),
        "-t",
        "csv",
        "--env-manager",
        "local",
    ]
    out = subprocess.run(predict, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    predictions = json.loads(out.stdout.strip().splitlines()[-1])["predictions"]
    assert [p["name"] for p in predictions] == ["emma", "andrej"]


def test_a_served_model_says_which_input_is_bad_and_ignores_unknown_params(study):
    """`mlflow models serve` of the champion, over HTTP: a name outside a-z or a negative
    sample count is a 400 whose message gives the reason after MLflow's own "Error:"; a param
    the signature does not name never reaches the model (MLflow drops it with a warning)."""
    import socket
    import time
    import urllib.error
    import urllib.request

    path, env = study
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-p", str(port)]
    serve += ["-m", "models:/actgrad-mlp@champion", "--env-manager", "local"]
    server = subprocess.Popen(
        serve, cwd=path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )

    def post(body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            json.dumps(body).encode(),
            {"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping")
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "no server"
                time.sleep(0.5)
        names = {"dataframe_split": {"columns": ["name"], "data": [["emma"], ["Zoe"]]}}
        status, answer = post(names)
        assert status == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
        assert answer["message"].endswith(
            "\nError: name: 'Zoe' has 'Z', which is not in the vocabulary "
            "(abcdefghijklmnopqrstuvwxyz)"
        )
        emma = {"dataframe_split": {"columns": ["name"], "data": [["emma"]]}}
        status, answer = post(emma | {"params": {"sample": -1}})
        assert status == 400
        assert answer["message"].endswith("\nError: params.sample: must be an integer >= 0, got -1")
        status, answer = post(emma | {"params": {"sampel": 3}})
        assert status == 200 and [p["name"] for p in answer["predictions"]] == ["emma"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn workers it starts
        log = server.communicate(timeout=30)[1]
    assert "Unrecognized params ['sampel'] are ignored" in log
