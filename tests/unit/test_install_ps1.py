"""install/install.ps1, checked as text: no Windows runs here (and no PowerShell), so these tests
read the script — its parameters, the administrator check, the ACL and registration commands,
the -Uninstall path, and that -DryRun routes every change through Invoke-Step — rather than run
it. Where `pwsh` happens to be installed, the script is also parsed by PowerShell's own parser.
"""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "install" / "install.ps1"
TEXT = SCRIPT.read_text()
CODE_LINES = [line for line in TEXT.splitlines() if not line.lstrip().startswith("#")]

# Commands that change the machine: with -DryRun none may run, so each sits in an Invoke-Step.
CHANGES = ("Register-ScheduledTask", "Unregister-ScheduledTask", "Start-ScheduledTask",
           "Stop-ScheduledTask", "Start-Service", "Stop-Service", "Set-Service", "'sc.exe'",
           "'icacls.exe'", "WriteAllText", "Move-Item", "Stop-Process", "'-m', 'venv'",
           "'pip', 'install'", "'py_compile'", "'--install-service'")


def block_after(text, start):
    """The {...} block that opens at or after `start`, braces matched."""
    opening = text.index("{", start)
    depth = 0
    for index in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return opening, index + 1
    raise AssertionError(f"unbalanced braces after offset {start}")


def function_body(name):
    match = re.search(rf"^function {re.escape(name)}\b", TEXT, re.M)
    assert match, f"no function {name}"
    begin, end = block_after(TEXT, match.end())
    return TEXT[begin:end]


def step_spans():
    """(begin, end) of every script block handed to Invoke-Step."""
    spans = []
    for match in re.finditer(r"^\s*Invoke-Step\b", TEXT, re.M):
        spans.append(block_after(TEXT, match.end()))
    return spans


def param_block():
    match = re.search(r"^param\(", TEXT, re.M)
    assert match, "no param block"
    depth, index = 0, match.end() - 1
    for index in range(match.end() - 1, len(TEXT)):
        depth += {"(": 1, ")": -1}.get(TEXT[index], 0)
        if depth == 0:
            break
    return TEXT[match.end():index]


def test_parameters_are_the_documented_ones_with_their_types():
    declared = dict((name, kind) for kind, name in
                    re.findall(r"\[(string|int|switch)\]\$(\w+)", param_block()))
    assert declared == {"ApiKey": "string", "Url": "string", "Interval": "int",
                        "PythonPath": "string", "Uninstall": "switch", "Purge": "switch",
                        "DryRun": "switch", "SkipCheck": "switch"}
    assert "[ValidateRange(1, 3600)]" in param_block()


def test_requires_administrator_with_an_explicit_check():
    """`#Requires -RunAsAdministrator` breaks the script when it runs as a script block (the
    panel's one-line install does that), so the check is code, and -DryRun is let through."""
    assert not re.search(r"^#Requires\s+-RunAsAdministrator", TEXT, re.M | re.I)
    body = function_body("Assert-Administrator")
    assert "IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)" in body
    assert "exit" in function_body("Stop-Install") and "Stop-Install" in body
    assert re.search(r"if \(\$DryRun\) \{ return \}", body)
    calls = TEXT[TEXT.rindex("Assert-Administrator"):]
    assert calls.index("Assert-Administrator") < calls.index("Install-Agent")


def test_the_key_is_never_printed_nor_passed_to_a_program():
    uses = [line.strip() for line in CODE_LINES if "$ApiKey" in line]
    assert uses, "the script never uses $ApiKey"
    for line in uses:
        assert not re.search(r"Write-|echo|Out-Host|Out-File|Set-Content|Add-Content|"
                             r"Invoke-Native|Invoke-Checked|Stop-Install|throw|&\s", line), line
    assert re.search(r"\$document\.controlPanel\['apiKey'\] = \$ApiKey", TEXT)
    assert "Start-Transcript" not in TEXT and "Set-PSDebug" not in TEXT
    # The check reads the key from config.json; the panel's URL is all its command line holds.
    assert "'--api-key'" not in TEXT


def test_config_is_utf8_without_bom_in_a_folder_only_system_and_administrators_read():
    body = function_body("Write-AgentConfig")
    assert "[IO.File]::WriteAllText(" in body and "UTF8Encoding($false)" in body
    code = "\n".join(CODE_LINES)
    assert "Set-Content" not in code and "Out-File" not in code  # 5.1 writes a BOM
    assert "$ConfigFile = Join-Path $DataDir 'config.json'" in TEXT
    assert "$DataDir = Join-Path $env:ProgramData 'mpanel-agent'" in TEXT
    assert "$SystemSid = '*S-1-5-18'" in TEXT and "$AdministratorsSid = '*S-1-5-32-544'" in TEXT
    folder = function_body("Protect-DataDir")
    assert re.search(r"'icacls\.exe' @\(\$DataDir, '/inheritance:r', '/grant:r',\s+"
                     r"\"\$\(\$SystemSid\):\(OI\)\(CI\)F\", \"\$\(\$AdministratorsSid\):\(OI\)\(CI\)F\"\)",
                     folder)
    assert re.search(r"'icacls\.exe' @\(\$ConfigFile, '/inheritance:r', '/grant:r',\s+"
                     r"\"\$\(\$SystemSid\):F\", \"\$\(\$AdministratorsSid\):F\"\)", body)
    install = function_body("Install-Agent")
    assert install.index("Protect-DataDir") < install.index("Write-AgentConfig")


def test_program_goes_under_program_files_with_a_venv_of_psutil_and_urllib3():
    assert "$InstallDir = Join-Path $env:ProgramFiles 'mpanel-agent'" in TEXT
    assert "$VenvDir = Join-Path $InstallDir 'venv'" in TEXT
    venv = function_body("Install-Venv")
    assert "@('-m', 'venv', $VenvDir)" in venv
    assert "'psutil', 'urllib3>=1.26'" in venv
    probe = function_body("Test-Requirements")
    assert "urllib3.__version__" in probe
    # Windows PowerShell 5.1 drops double quotes inside a native program's arguments.
    snippets = re.findall(r"(?:'-c', |\$probe = )'((?:[^']|'')*)'", TEXT)
    assert len(snippets) >= 4
    for snippet in snippets:
        assert '"' not in snippet, snippet
    finder = function_body("Find-Python")
    assert "'py.exe'" in finder and "'python.exe'" in finder and "$PythonPath" in finder
    assert "WindowsApps" in finder  # the Store's stub python.exe is skipped


def test_agent_py_comes_from_beside_the_script_or_the_panels_downloads():
    body = function_body("Get-AgentSource")
    assert "$PSScriptRoot" in body
    assert '"$($Url.TrimEnd(\'/\'))/downloads/agent.py"' in body
    assert "Invoke-WebRequest -Uri $source -OutFile $target -UseBasicParsing" in body
    assert "Tls12" in body


def test_check_runs_before_the_agent_is_registered_and_a_failure_rolls_back():
    install = function_body("Install-Agent")
    assert install.index("Test-Agent") < install.index("Start-Agent")
    assert "@('-m', 'agent', '--config', $ConfigFile, '--check')" in function_body("Test-Agent")
    assert "-SkipCheck" in function_body("Test-Agent") or "$SkipCheck" in function_body("Test-Agent")
    assert re.search(r"catch \{.*Undo-Install.*exit 1", install, re.S)
    undo = function_body("Undo-Install")
    assert "Remove-Item -LiteralPath $InstallDir" in undo and "'.previous'" in undo


def test_scheduled_task_runs_as_system_at_boot_restarts_and_never_times_out():
    body = function_body("Register-AgentTask")
    assert "New-ScheduledTaskTrigger -AtStartup" in body
    assert "-RepetitionInterval (New-TimeSpan -Minutes 5)" in body
    assert "New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount" in body
    settings = re.search(r"New-ScheduledTaskSettingsSet(.*?)\n\s*Register-", body, re.S).group(1)
    for option in ("-RestartCount 999", "-RestartInterval (New-TimeSpan -Minutes 1)",
                   "-ExecutionTimeLimit ([TimeSpan]::Zero)", "-MultipleInstances IgnoreNew"):
        assert option in settings, option
    assert re.search(r"Register-ScheduledTask -TaskName \$TaskName -TaskPath \$TaskPath", body)
    assert "-Argument \"-m agent --config `\"$ConfigFile`\"\" -WorkingDirectory $InstallDir" in body
    assert "$TaskName = 'mpanel-agent'" in TEXT


def test_service_path_restarts_on_failure_and_starts_at_boot():
    body = function_body("Register-AgentService")
    assert "'--install-service'" in body
    assert "'failure', $ServiceName, 'reset=', '86400'" in body
    assert "'restart/60000/restart/60000/restart/60000'" in body
    assert "'failureflag', $ServiceName, '1'" in body
    assert "Set-Service -Name $ServiceName -StartupType Automatic" in body
    assert "$ServiceName = 'mpanel-agent'" in TEXT
    # Chosen only when agent.py offers the service host and pywin32 imports.
    chooser = function_body("Test-ServiceHost")
    assert "'--install-service'" in chooser and "import win32serviceutil" in chooser


def test_uninstall_removes_task_service_and_program_and_purge_the_data():
    body = function_body("Uninstall-Agent")
    for call in ("Stop-Agent", "Remove-AgentTask", "Remove-AgentService",
                 "Remove-Item -LiteralPath $InstallDir -Recurse -Force",
                 "Remove-Item -LiteralPath $DataDir -Recurse -Force",
                 "Remove-Item -LiteralPath $ConfigFile -Force"):
        assert call in body, call
    purge = body[body.index("if ($Purge)"):]
    assert purge.index("$DataDir -Recurse") < purge.index("} else {")
    assert "Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false" in \
        function_body("Remove-AgentTask")
    assert "@('delete', $ServiceName)" in function_body("Remove-AgentService")
    assert re.search(r"if \(\$Uninstall\) \{ Uninstall-Agent \} else \{ Install-Agent \}", TEXT)


def test_dry_run_prints_instead_of_doing_every_change():
    helper = function_body("Invoke-Step")
    assert re.search(r"if \(\$DryRun\) \{\s+Write-Host \"would: \$Description\"\s+return\s+\}",
                     helper)
    spans = step_spans()
    assert len(spans) >= 15
    helper_span = block_after(TEXT, TEXT.index("function Invoke-Step"))
    for command in CHANGES:
        places = [m.start() for m in re.finditer(re.escape(command), TEXT)]
        assert places, command
        for place in places:
            line = TEXT[TEXT.rindex("\n", 0, place) + 1:TEXT.index("\n", place)]
            if line.lstrip().startswith(("#", "Invoke-Step")) or \
                    helper_span[0] <= place < helper_span[1]:
                continue  # a comment, a step's description, or the helper itself
            inside_step = any(begin <= place < end for begin, end in spans)
            in_probe = command == "'--install-service'" and "Test-ServiceHost" in \
                TEXT[TEXT.rindex("function ", 0, place):place]
            assert inside_step or in_probe, f"{command} runs outside Invoke-Step: {line.strip()}"
    # The download and the check are skipped, not merely announced.
    assert re.search(r"if \(\$DryRun\) \{\s+Write-Host \"would: download", TEXT)
    assert re.search(r"if \(\$DryRun\) \{\s+Write-Host \"would: run", function_body("Test-Agent"))


def test_script_is_ascii_so_windows_powershell_reads_it_as_written():
    """Windows PowerShell 5.1 reads a .ps1 without a byte-order mark in the ANSI code page: any
    non-ASCII character (an em dash in a string) would change on the way."""
    assert SCRIPT.read_bytes().isascii()


def test_powershell_parses_the_script_where_powershell_is_installed():
    pwsh = shutil.which("pwsh") or shutil.which("powershell")
    if not pwsh:
        pytest.skip("no PowerShell here (Microsoft's packages are not in Debian's archive): the "
                    "script is checked as text only")
    command = ("$errors = $null; [System.Management.Automation.Language.Parser]::ParseFile("
               f"'{SCRIPT}', [ref]$null, [ref]$errors) | Out-Null; "
               "$errors | ForEach-Object { $_.ToString() }; exit $errors.Count")
    result = subprocess.run([pwsh, "-NoProfile", "-Command", command], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
