"""CCN_<COMMAND>_<OPTION> environment variables: a bad value names the variable, and a variable
that sets no option is pointed out instead of silently ignored."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QS = os.path.join(ROOT, "layer-defs", "quickstart.ini")


def ccn(*args, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CCN_")}
    e.update(env, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "ccn.cli.main", *args], capture_output=True, text=True, env=e,
                          timeout=120, cwd=ROOT)


def test_a_bad_value_from_the_environment_names_the_variable():
    r = ccn("show-net", "--layers", QS, CCN_SHOW_NET_IMAGE_SIZE="abc")
    assert r.returncode == 2
    assert "'abc' is not a valid integer range (the value comes from the environment variable " \
           "CCN_SHOW_NET_IMAGE_SIZE)." in r.stderr
    # the same bad value on the command line is the command line's
    r = ccn("show-net", "--layers", QS, "--image-size", "abc", CCN_SHOW_NET_IMAGE_SIZE="abc")
    assert r.returncode == 2 and "environment variable" not in r.stderr


def test_a_variable_that_sets_no_option_is_pointed_out():
    r = ccn("show-net", "--layers", QS, CCN_SHOW_NET_IMAGESIZE="32", CCN_SHOW_NET_IMAGE_SIZE="32",
            CCN_SHOW_NET_QQQ="1")
    assert r.returncode == 0, r.stderr
    assert "warning: the environment variable CCN_SHOW_NET_IMAGESIZE sets no option of `ccn show-net` and is " \
           "ignored; did you mean CCN_SHOW_NET_IMAGE_SIZE?" in r.stderr
    assert "CCN_SHOW_NET_QQQ sets no option" in r.stderr and "e.g. CCN_SHOW_NET_" in r.stderr
    assert "IMAGE_SIZE sets" not in r.stderr


def test_an_options_own_variable_is_known():
    # README's example: --json reads CCN_INFO_JSON (its parameter is json_out)
    r = ccn("info", CCN_INFO_JSON="1")
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and r.stdout.lstrip().startswith("{")


def test_ccn_core_naming_no_file_is_an_input_error():
    r = ccn("info", CCN_CORE="/nonexistent/_core.so")
    assert r.returncode == 2, r.stderr
    assert "the environment variable CCN_CORE names /nonexistent/_core.so, which is not a file" in r.stderr
    assert "Traceback" not in r.stderr
    # a file that is not an extension: it cannot be loaded (a failure at run time, exit 1)
    r = ccn("info", CCN_CORE=QS)
    assert r.returncode == 1 and "the native core that CCN_CORE names could not be loaded" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
