"""The agent as a Windows service. No Windows runs here, so pywin32 cannot either: its three
modules are stand-ins recording what the agent asks of them (a documented stand-in, per the
brief). What is checked: the service is offered only where pywin32 imports, the class starts
the real Agent from the config and stops it through its stop event, and install registers the
class by its file path with automatic start."""
import sys
import types

import agent


class FakeFramework:
    def __init__(self, args):
        self.reported = []

    def ReportServiceStatus(self, status):
        self.reported.append(status)


def fake_pywin32():
    servicemanager = types.SimpleNamespace(messages=[])
    servicemanager.LogInfoMsg = servicemanager.messages.append
    servicemanager.LogErrorMsg = servicemanager.messages.append
    win32service = types.SimpleNamespace(SERVICE_STOP_PENDING=3, SERVICE_AUTO_START=2)
    calls = []
    win32serviceutil = types.SimpleNamespace(
        ServiceFramework=FakeFramework, calls=calls,
        InstallService=lambda *a, **k: calls.append(("install", a, k)),
        RemoveService=lambda name: calls.append(("remove", name)))
    return servicemanager, win32service, win32serviceutil


def test_no_service_options_without_windows_and_pywin32():
    help_text = agent.build_parser().format_help()
    assert "--install-service" not in help_text
    assert agent.manage_service("install") == 2


def test_service_runs_the_agent_from_its_config_and_stops_it(tmp_path, monkeypatch):
    modules = fake_pywin32()
    service_class = agent.make_service_class(modules)
    config = agent.Config(url="https://panel.example.com", api_key="agent_0123456789ab_" + "x" * 40,
                          state_dir=str(tmp_path))
    monkeypatch.setattr(agent, "load_config", lambda path: config)
    monkeypatch.setattr(agent, "setup_logging", lambda config: None)
    ran = []
    monkeypatch.setattr(agent.Agent, "run_forever", lambda self: ran.append(self) or 0)
    service = service_class(["mpanel-agent"])
    service.SvcDoRun()
    assert ran and isinstance(ran[0], agent.Agent) and ran[0].config is config
    assert service_class._svc_name_ == "mpanel-agent"
    service.SvcStop()
    assert service.agent.stop_event.is_set()
    assert service.reported == [3]


def test_service_without_a_key_logs_why_and_does_not_start(monkeypatch):
    servicemanager, *_ = modules = fake_pywin32()
    service_class = agent.make_service_class(modules)
    monkeypatch.setattr(agent, "load_config", lambda path: agent.Config())
    monkeypatch.setattr(agent, "setup_logging", lambda config: None)
    service = service_class(["mpanel-agent"])
    service.SvcDoRun()
    assert service.agent is None
    assert "no panel URL" in servicemanager.messages[0]


def test_install_registers_the_class_by_its_path_with_automatic_start(monkeypatch):
    modules = fake_pywin32()
    monkeypatch.setattr(agent, "WINDOWS", True)
    monkeypatch.setattr(agent, "_load_pywin32", lambda: modules)
    monkeypatch.setattr(agent, "AgentService", agent.make_service_class(modules), raising=False)
    assert agent.manage_service("install") == 0
    kind, args, kwargs = modules[2].calls[0]
    assert args[0].endswith("agent.AgentService") and args[0] != "agent.AgentService"
    assert args[1] == "mpanel-agent" and kwargs["startType"] == 2
    assert "--install-service" in agent.build_parser().format_help()
    assert agent.manage_service("remove") == 0 and modules[2].calls[1] == ("remove", "mpanel-agent")
    assert sys.platform != "win32"  # the stand-ins only ever run off Windows
