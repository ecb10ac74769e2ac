"""The local stack's code (deploy/local/stack.py over deploy/local/stackparts/), without starting
anything: the command keeps its names, the parts and their order, what `clean` takes together,
Keycloak's realm as declared, its credentials file, and the Java it looks for."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from deploy.local.stackparts import cli, keycloak, runner
from hubstream.settings import PROJECT_ROOT
from producers import simulate


def load_stack_py() -> ModuleType:
    """deploy/local/stack.py loaded by path, as tests/integration/test_kafka_security.py does."""
    spec = importlib.util.spec_from_file_location(
        "_unit_hubstream_stack", PROJECT_ROOT / "deploy/local/stack.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_stack_py_still_offers_every_name_callers_use() -> None:
    stack = load_stack_py()
    for name in (
        "Endpoint", "kafka_connection", "scram_authenticate", "kafka_metadata_ok", "Config", "StackError",
        "Kafka", "Secrets", "Postgres", "PgSecrets", "pg_scram_verifier", "Registry", "Keycloak",
        "parts_for", "build_parser", "main", "PART_NAMES", "DEPLOY_DIR", "run", "spawn", "wait_until",
        "unpack", "java_bin", "mvn_bin", "rss_mib", "read_credentials",
    ):  # fmt: skip
        assert hasattr(stack, name), name
    assert stack.DEPLOY_DIR == PROJECT_ROOT / "deploy" / "local"


def test_parts_in_start_order_keycloak_last(tmp_path: Path) -> None:
    config = runner.Config(
        home=tmp_path, kafka_port=1, controller_port=2, secure_port=3, plaintext=False,
        secrets_dir=tmp_path / "secrets", pg_port=4, registry_port=5, timeout_s=1.0,
    )  # fmt: skip
    assert cli.PART_NAMES == ("kafka", "postgres", "registry", "keycloak")
    assert [p.name for p in cli.parts_for(config, [])] == list(cli.PART_NAMES)
    assert [p.name for p in cli.parts_for(config, ["keycloak"])] == ["keycloak"]
    assert (config.keycloak_port, config.keycloak_management_port) == (18080, 18090)
    args = cli.build_parser().parse_args(["down", "keycloak"])
    assert args.parts == ["keycloak"]


@pytest.mark.parametrize(
    ("named", "cleaned"),
    [
        ({"keycloak"}, {"keycloak"}),
        ({"kafka"}, {"kafka", "registry"}),
        ({"postgres"}, {"postgres", "kafka", "registry"}),
        ({"registry", "keycloak"}, {"registry", "kafka", "keycloak"}),
    ],
)
def test_clean_keeps_kafka_and_the_registry_together_and_keycloak_apart(
    named: set[str], cleaned: set[str]
) -> None:
    assert cli.clean_set(named) == cleaned


def test_keycloak_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_KEYCLOAK_PORT", "28080")
    monkeypatch.setenv("HUBSTREAM_KEYCLOAK_MANAGEMENT_PORT", "28090")
    config = runner.Config.from_settings(5.0)
    assert (config.keycloak_port, config.keycloak_management_port) == (28080, 28090)
    assert keycloak.Keycloak(config).address == "http://127.0.0.1:28080/realms/hubstream"


# --------------------------------------------------------------------------------------------
# Keycloak's realm as declared


def test_authorities_are_the_projects_own() -> None:
    project = {a.code: a.name for a in (simulate.LEICESTER, simulate.LEICESTERSHIRE, simulate.RUTLAND)}
    assert project == keycloak.AUTHORITIES


def test_every_demo_user_holds_declared_roles_and_authorities() -> None:
    names = [u.username for u in keycloak.DEMO_USERS]
    assert len(set(names)) == len(names)
    assert {"practitioner.city", "practitioner.county", "practitioner.rutland", "manager"} <= set(names)
    for user in keycloak.DEMO_USERS:
        assert set(user.roles) <= set(keycloak.ROLES), user
        assert user.authorities and set(user.authorities) <= set(keycloak.AUTHORITIES), user
    by_name = {u.username: u for u in keycloak.DEMO_USERS}
    assert by_name["practitioner.city"].authorities == ("E06000016",)
    assert by_name["practitioner.county"].authorities == ("E10000018",)
    assert by_name["practitioner.rutland"].authorities == ("E06000017",)
    assert set(by_name["manager"].authorities) == set(keycloak.AUTHORITIES)
    assert set(keycloak.ROLES) == {"hub-practitioner", "hub-manager", "analyst", "auditor"}


def test_hub_web_is_confidential_code_flow_with_pkce_s256_on_loopback_only() -> None:
    client = keycloak.client_representation("s3cret")
    assert client["clientId"] == "hub-web" and client["secret"] == "s3cret"
    assert client["publicClient"] is False and client["clientAuthenticatorType"] == "client-secret"
    assert client["standardFlowEnabled"] is True
    assert not (client["implicitFlowEnabled"] or client["directAccessGrantsEnabled"])
    assert client["serviceAccountsEnabled"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert client["redirectUris"] == ["http://127.0.0.1/*"]


def test_claims_reach_the_id_token_and_userinfo() -> None:
    mappers = {m["config"]["claim.name"]: m for m in keycloak.protocol_mappers()}
    assert set(mappers) == {"authority", "realm_access.roles"}
    for mapper in mappers.values():
        assert mapper["config"]["id.token.claim"] == "true"
        assert mapper["config"]["userinfo.token.claim"] == "true"
        assert mapper["config"]["multivalued"] == "true"
    assert mappers["authority"]["config"]["user.attribute"] == "authority"
    assert mappers["realm_access.roles"]["protocolMapper"] == "oidc-usermodel-realm-role-mapper"


def test_user_profile_gains_authority_once_and_keeps_keycloaks_own() -> None:
    current = {"attributes": [{"name": "username"}, {"name": "email"}], "groups": [{"name": "user-metadata"}]}
    merged = keycloak.user_profile(current)
    assert [a["name"] for a in merged["attributes"]] == ["username", "email", "authority"]
    assert merged["groups"] == current["groups"]
    assert keycloak.user_profile(merged) == merged  # a second run changes nothing
    authority = merged["attributes"][-1]
    assert authority["validations"]["options"]["options"] == list(keycloak.AUTHORITIES)
    assert authority["permissions"]["edit"] == ["admin"]


def test_user_representation_carries_the_authority_attribute() -> None:
    user = keycloak.DEMO_USERS[0]
    representation = keycloak.user_representation(user)
    assert representation["attributes"] == {"authority": list(user.authorities)}
    assert representation["emailVerified"] is True and representation["requiredActions"] == []


# --------------------------------------------------------------------------------------------
# Credentials


def test_credentials_are_made_once_private_and_never_changed(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    store = keycloak.KeycloakSecrets(directory)
    first = store.ensure()
    assert stat.S_IMODE(store.file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert first.admin_username == "admin" and len(first.admin_password) >= 24
    assert set(first.passwords) == {u.username for u in keycloak.DEMO_USERS}
    assert len(set(first.passwords.values())) == len(first.passwords)
    assert first.client_secret() != first.admin_password
    before = store.file.read_text()
    assert store.ensure() == first
    assert store.file.read_text() == before
    assert keycloak.read_credentials(directory) == first


def test_a_missing_entry_is_added_and_the_rest_kept(tmp_path: Path) -> None:
    store = keycloak.KeycloakSecrets(tmp_path)
    first = store.ensure()
    doc = first.passwords.copy()
    del doc["auditor"]
    raw = json.loads(store.file.read_text())
    raw["users"] = doc
    store.file.write_text(json.dumps(raw))
    second = store.ensure()
    assert second.admin_password == first.admin_password
    assert second.client_secret() == first.client_secret()
    assert {k: v for k, v in second.passwords.items() if k != "auditor"} == doc
    assert second.passwords["auditor"] and second.passwords["auditor"] != first.passwords["auditor"]


# --------------------------------------------------------------------------------------------
# Java and archives


def fake_java(home: Path, version: str) -> Path:
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "java").write_text("#!/bin/sh\n")
    (home / "release").write_text(f'IMPLEMENTOR="test"\nJAVA_VERSION="{version}"\n')
    return home


def test_java_major_reads_the_release_file(tmp_path: Path) -> None:
    assert runner.java_major(fake_java(tmp_path / "a", "25.0.3")) == 25
    assert runner.java_major(fake_java(tmp_path / "b", "1.8.0_372")) == 8
    assert runner.java_major(tmp_path / "none") is None


def test_java_home_setting_must_be_new_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBSTREAM_KEYCLOAK_JAVA_HOME", str(fake_java(tmp_path / "old", "17.0.15")))
    with pytest.raises(runner.StackError, match="not a Java 21 or later"):
        runner.java_home_at_least("keycloak", 21, "HUBSTREAM_KEYCLOAK_JAVA_HOME")
    new = fake_java(tmp_path / "new", "21.0.2")
    monkeypatch.setenv("HUBSTREAM_KEYCLOAK_JAVA_HOME", str(new))
    assert runner.java_home_at_least("keycloak", 21, "HUBSTREAM_KEYCLOAK_JAVA_HOME") == new


def test_java_home_new_enough_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBSTREAM_KEYCLOAK_JAVA_HOME", raising=False)
    new = fake_java(tmp_path / "jdk-22", "22.0.1")
    monkeypatch.setenv("JAVA_HOME", str(new))
    assert runner.java_home_at_least("keycloak", 21, "HUBSTREAM_KEYCLOAK_JAVA_HOME") == new.resolve()


def test_unpacked_zip_keeps_execute_bits(tmp_path: Path) -> None:
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as out:
        script = zipfile.ZipInfo("app/bin/run.sh")
        script.external_attr = 0o100755 << 16
        out.writestr(script, "#!/bin/sh\n")
        out.writestr("app/README", "text")
    runner.unpack("test", archive, tmp_path / "out")
    assert stat.S_IMODE((tmp_path / "out/app/bin/run.sh").stat().st_mode) == 0o755
    assert not (tmp_path / "out/app/README").stat().st_mode & 0o111
