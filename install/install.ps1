<#
.SYNOPSIS
    Install, upgrade or remove the mPanel agent on Windows (PowerShell 5.1 or newer).

.DESCRIPTION
    Installs agent.py and a private Python venv (psutil, urllib3) under
    $env:ProgramFiles\mpanel-agent, writes $env:ProgramData\mpanel-agent\config.json readable only
    by SYSTEM and Administrators, checks the key against the panel (agent.py --check), and starts
    the agent at boot as SYSTEM, restarted when it stops:
      - as the Windows service "mpanel-agent" when agent.py can host itself as one (pywin32 and
        agent.py's --install-service), so Get-Service mpanel-agent shows it;
      - otherwise as the scheduled task \mPanel\mpanel-agent (Get-ScheduledTask mpanel-agent).
    docs/install.md explains why. Re-running it upgrades in place and keeps config.json (only
    -Url, -ApiKey and -Interval change it), the state and the buffered samples.

    Also runnable straight from the panel (this is the panel's "Windows" install line):
      powershell -NoProfile -ExecutionPolicy Bypass -Command "& ([scriptblock]::Create((Invoke-RestMethod 'https://panel.example.com/downloads/install.ps1'))) -Url 'https://panel.example.com' -ApiKey 'agent_...'"
    agent.py then comes from <Url>/downloads/agent.py.

    Exit codes: 0 done, 1 install failed (rolled back), 2 bad usage or not Administrator.

.EXAMPLE
    .\install.ps1 -Url https://panel.example.com -ApiKey agent_0123456789ab_...

.EXAMPLE
    .\install.ps1 -Uninstall -Purge
#>
# No "#Requires -RunAsAdministrator": it breaks the script when it runs as a script block (the
# panel's one-line install); the Administrator check below does the same job.
[CmdletBinding()]
param(
    # The server's API key from the panel (agent_...). Written to config.json, never printed.
    [string]$ApiKey,
    # The panel's address, https://... (http:// only to a panel on this machine).
    [string]$Url,
    # Seconds between reports (default 60; on an upgrade the config's value is kept).
    [ValidateRange(1, 3600)]
    [int]$Interval,
    # python.exe (3.8+) to build the agent's venv from; found with the py launcher otherwise.
    [string]$PythonPath,
    # Remove the service or task, the program folder and config.json; keep state and logs.
    [switch]$Uninstall,
    # With -Uninstall: also remove $env:ProgramData\mpanel-agent (state, buffer, logs).
    [switch]$Purge,
    # Print every action and change nothing (allowed without Administrator).
    [switch]$DryRun,
    # Do not run agent.py --check against the panel (for images built offline).
    [switch]$SkipCheck
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$ServiceName = 'mpanel-agent'
$TaskName = 'mpanel-agent'
$TaskPath = '\mPanel\'
$InstallDir = Join-Path $env:ProgramFiles 'mpanel-agent'
$DataDir = Join-Path $env:ProgramData 'mpanel-agent'
$ConfigFile = Join-Path $DataDir 'config.json'
$VenvDir = Join-Path $InstallDir 'venv'
$VenvPython = Join-Path $VenvDir 'Scripts\python.exe'
$AgentFile = Join-Path $InstallDir 'agent.py'
# Well-known SIDs rather than names: "Administrators" is "Administratoren" on a German Windows.
$SystemSid = '*S-1-5-18'
$AdministratorsSid = '*S-1-5-32-544'

# ===== Output and small helpers ================================================================

function Write-Step([string]$Message) { Write-Host $Message }

function Stop-Install([string]$Message, [int]$Code = 1) {
    Write-Host "error: $Message" -ForegroundColor Red
    exit $Code
}

# Every change to the system goes through Invoke-Step: -DryRun prints it instead.
function Invoke-Step([string]$Description, [scriptblock]$Action) {
    if ($DryRun) {
        Write-Host "would: $Description"
        return
    }
    & $Action
}

# A native program's output and exit code. Windows PowerShell 5.1 turns a native program's
# stderr into errors, which 'Stop' would make fatal: the preference is relaxed around the call.
function Invoke-Native([string]$FilePath, [string[]]$Arguments, [string]$WorkingDirectory) {
    $saved = $ErrorActionPreference
    $ErrorActionPreference = 'Continue'
    if ($WorkingDirectory) { Push-Location -LiteralPath $WorkingDirectory }
    try {
        $output = & $FilePath @Arguments 2>&1 | ForEach-Object { "$_" }
        $code = $LASTEXITCODE
    } finally {
        if ($WorkingDirectory) { Pop-Location }
        $ErrorActionPreference = $saved
    }
    return [pscustomobject]@{ ExitCode = $code; Output = ($output -join "`n") }
}

function Invoke-Checked([string]$FilePath, [string[]]$Arguments, [string]$WorkingDirectory) {
    $result = Invoke-Native $FilePath $Arguments $WorkingDirectory
    if ($result.ExitCode -ne 0) {
        throw "$(Split-Path -Leaf $FilePath) $($Arguments -join ' ') failed (exit $($result.ExitCode)): $($result.Output)"
    }
    return $result
}

# ConvertFrom-Json gives PSCustomObjects (and 5.1 has no -AsHashtable): hashtables are easier
# to change and keep their key order.
function ConvertTo-OrderedTable($Value) {
    if ($Value -is [System.Management.Automation.PSCustomObject]) {
        $table = [ordered]@{}
        foreach ($property in $Value.PSObject.Properties) {
            $table[$property.Name] = ConvertTo-OrderedTable $property.Value
        }
        return $table
    }
    if ($Value -is [System.Array]) {
        return , @($Value | ForEach-Object { ConvertTo-OrderedTable $_ })
    }
    return $Value
}

# ===== Checks before anything changes ===========================================================

function Assert-Administrator {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    if ($principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)) { return }
    if ($DryRun) { return }
    Stop-Install ("install.ps1 must run as Administrator: it installs under Program Files and " +
        "registers a service. Open PowerShell with 'Run as administrator', or add -DryRun to " +
        "see what it would do.") 2
}

function Assert-Arguments {
    if ($PSVersionTable.PSVersion.Major -lt 5) {
        Stop-Install "PowerShell 5.1 or newer is required (this is $($PSVersionTable.PSVersion))" 2
    }
    if ($ApiKey -and $ApiKey -cnotmatch '^agent_[A-Za-z0-9_-]+$') {
        Stop-Install 'the API key does not look like an mPanel key (agent_ then letters, digits, _ or -)' 2
    }
    if ($Url -and $Url -notmatch '^https?://[^\s"''`<>\\]+$') {
        Stop-Install '-Url must start with https:// or http:// and hold no spaces or quotes' 2
    }
    if ($Purge -and -not $Uninstall) { Stop-Install '-Purge only goes with -Uninstall' 2 }
    if ($PythonPath -and -not (Test-Path -LiteralPath $PythonPath -PathType Leaf)) {
        Stop-Install "-PythonPath $PythonPath is not a file" 2
    }
}

# ===== Python ===================================================================================

function Test-PythonVersion([string]$Python) {
    $result = Invoke-Native $Python @('-c', 'import sys; sys.exit(sys.version_info < (3, 8))')
    return $result.ExitCode -eq 0
}

# What agent.py needs: psutil and urllib3 1.26 or newer.
function Test-Requirements([string]$Python) {
    if (-not (Test-Path -LiteralPath $Python)) { return $false }
    # No double quotes in it: 5.1 drops them from a native program's arguments.
    $probe = 'import sys, psutil, urllib3; sys.exit(tuple(int(p) for p in urllib3.__version__.split(''.'')[:2]) < (1, 26))'
    return (Invoke-Native $Python @('-c', $probe)).ExitCode -eq 0
}

function Find-Python {
    if ($PythonPath) {
        if (-not (Test-PythonVersion $PythonPath)) { Stop-Install "$PythonPath is not Python 3.8 or newer" 2 }
        return (Resolve-Path -LiteralPath $PythonPath).Path
    }
    $candidates = @()
    $launcher = Get-Command 'py.exe' -ErrorAction SilentlyContinue | Select-Object -First 1
    if ($launcher) {
        $found = Invoke-Native $launcher.Path @('-3', '-c', 'import sys; print(sys.executable)')
        if ($found.ExitCode -eq 0) { $candidates += $found.Output.Trim() }
    }
    # WindowsApps\python.exe is the Store's stub: it opens the Store instead of running Python.
    $candidates += @(Get-Command 'python.exe' -All -ErrorAction SilentlyContinue |
        Where-Object { $_.Path -notlike '*\WindowsApps\*' } | ForEach-Object { $_.Path })
    foreach ($candidate in $candidates) {
        if ($candidate -and (Test-Path -LiteralPath $candidate) -and (Test-PythonVersion $candidate)) {
            if ($candidate -like "$env:SystemDrive\Users\*") {
                Write-Warning ("$candidate is a per-user Python: the agent's venv depends on it, so " +
                    "it must stay installed (a Python installed for all users is safer)")
            }
            return $candidate
        }
    }
    Stop-Install ("Python 3.8 or newer is required: install it for all users (python.org installer " +
        "with 'Install for all users', or: winget install --scope machine Python.Python.3.12), " +
        "or pass -PythonPath") 2
}

function Install-Venv([string]$Python) {
    if (Test-Requirements $VenvPython) {
        Write-Step "venv: $VenvDir (kept; psutil and urllib3 are there)"
        return
    }
    Invoke-Step "create the venv: $Python -m venv `"$VenvDir`"" {
        Invoke-Checked $Python @('-m', 'venv', $VenvDir) | Out-Null
    }
    Invoke-Step "pip install psutil urllib3 into the venv" {
        Invoke-Checked $VenvPython @('-m', 'pip', 'install', '--quiet', '--disable-pip-version-check',
            'psutil', 'urllib3>=1.26') | Out-Null
    }
}

# pywin32 lets agent.py host itself as a service; without it the agent runs as a scheduled task.
function Install-Pywin32 {
    Invoke-Step "pip install pywin32 into the venv (optional: for the Windows service)" {
        $result = Invoke-Native $VenvPython @('-m', 'pip', 'install', '--quiet',
            '--disable-pip-version-check', 'pywin32')
        if ($result.ExitCode -ne 0) {
            Write-Warning "pywin32 did not install; the agent will run as a scheduled task"
        }
    }
}

# ===== Files ====================================================================================

function Get-AgentSource([string]$Work) {
    # Beside the script (a copied folder), or one level up (a checkout of the repository). Run
    # as a script block from the panel, the script has no folder: agent.py is downloaded.
    if ($PSScriptRoot) {
        foreach ($candidate in @((Join-Path $PSScriptRoot 'agent.py'),
                (Join-Path (Split-Path -Parent $PSScriptRoot) 'agent.py'))) {
            if (Test-Path -LiteralPath $candidate -PathType Leaf) { return $candidate }
        }
    }
    if (-not $Url) { Stop-Install '-Url is required to download agent.py' 2 }
    $source = "$($Url.TrimEnd('/'))/downloads/agent.py"
    $target = Join-Path $Work 'agent.py'
    if ($DryRun) {
        Write-Host "would: download $source"
        return $source
    }
    Write-Step "downloading $source"
    # Windows PowerShell 5.1 may still default to TLS 1.0.
    [Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor
        [Net.SecurityProtocolType]::Tls12
    Invoke-WebRequest -Uri $source -OutFile $target -UseBasicParsing
    if (-not (Select-String -LiteralPath $target -Pattern '^__version__ = ' -Quiet)) {
        Stop-Install "$source did not return agent.py (is -Url the panel's address?)"
    }
    return $target
}

function Get-AgentVersion([string]$Path) {
    if (-not (Test-Path -LiteralPath $Path)) { return $null }
    $line = Select-String -LiteralPath $Path -Pattern '^__version__ = "(.*)"' | Select-Object -First 1
    if ($line) { return $line.Matches[0].Groups[1].Value }
    return $null
}

# The config document: the existing one on an upgrade (changed only by -Url, -ApiKey and
# -Interval: Changed says whether any was given), else defaults.
function New-AgentConfig([bool]$Upgrade) {
    $changed = $true
    if ($Upgrade) {
        $document = ConvertTo-OrderedTable (Get-Content -LiteralPath $ConfigFile -Raw | ConvertFrom-Json)
        $changed = [bool]($Url -or $ApiKey -or $script:IntervalGiven)
    } else {
        $document = [ordered]@{
            controlPanel = [ordered]@{}
            agent        = [ordered]@{ reportInterval = 60; stateDir = $DataDir }
            logging      = [ordered]@{ level = 'info'; file = (Join-Path $DataDir 'agent.log') }
        }
    }
    foreach ($section in 'controlPanel', 'agent', 'logging') {
        if (-not $document.Contains($section)) { $document[$section] = [ordered]@{} }
    }
    if ($Url) { $document.controlPanel['url'] = $Url.TrimEnd('/') }
    if ($ApiKey) { $document.controlPanel['apiKey'] = $ApiKey }
    if ($script:IntervalGiven) { $document.agent['reportInterval'] = $Interval }
    if (-not $document.controlPanel['url']) { Stop-Install '-Url is required' 2 }
    if (-not $document.controlPanel['apiKey']) {
        Stop-Install '-ApiKey is required (the panel shows the key once, when the server is added)' 2
    }
    return [pscustomobject]@{ Document = $document; Changed = $changed }
}

# config.json and the folder holding it (state, buffer and logs too): SYSTEM and Administrators
# only, nothing inherited from ProgramData (whose default lets every user read). The state file
# can hold a key the panel handed over, so the whole folder is closed, not just config.json.
function Protect-DataDir {
    Invoke-Step "icacls `"$DataDir`" /inheritance:r /grant:r SYSTEM and Administrators full control" {
        Invoke-Checked 'icacls.exe' @($DataDir, '/inheritance:r', '/grant:r',
            "$($SystemSid):(OI)(CI)F", "$($AdministratorsSid):(OI)(CI)F") | Out-Null
    }
}

function Write-AgentConfig($Document) {
    Invoke-Step "write $ConfigFile (SYSTEM and Administrators only; the key is not shown)" {
        $json = $Document | ConvertTo-Json -Depth 20
        $temporary = "$ConfigFile.new"
        # UTF-8 without a byte-order mark: Python's json refuses one, and 5.1's Set-Content
        # -Encoding UTF8 writes it. The file is created inside the already-closed folder.
        [IO.File]::WriteAllText($temporary, $json, (New-Object Text.UTF8Encoding($false)))
        Move-Item -LiteralPath $temporary -Destination $ConfigFile -Force
        Invoke-Checked 'icacls.exe' @($ConfigFile, '/inheritance:r', '/grant:r',
            "$($SystemSid):F", "$($AdministratorsSid):F") | Out-Null
    }
}

# ===== Service or scheduled task ================================================================

function Get-AgentTask {
    return Get-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -ErrorAction SilentlyContinue
}

function Get-AgentService {
    return Get-Service -Name $ServiceName -ErrorAction SilentlyContinue
}

# A real service needs agent.py's own service host (pywin32's service framework): plain
# python.exe cannot answer the Service Control Manager. Offered once agent.py lists it.
function Test-ServiceHost {
    if ($DryRun -or -not (Test-Path -LiteralPath $AgentFile)) { return $false }
    $help = Invoke-Native $VenvPython @('-m', 'agent', '--help') $InstallDir
    if ($help.Output -notmatch '--install-service') { return $false }
    return (Invoke-Native $VenvPython @('-c', 'import win32serviceutil')).ExitCode -eq 0
}

function Stop-Agent {
    if (Get-AgentTask) {
        Invoke-Step "Stop-ScheduledTask $TaskPath$TaskName" {
            Stop-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath
        }
    }
    $service = Get-AgentService
    if ($service -and $service.Status -ne 'Stopped') {
        Invoke-Step "Stop-Service $ServiceName" { Stop-Service -Name $ServiceName -Force }
    }
    # The venv's python.exe starts the real interpreter as a child: stop that one too, or the
    # files it holds (psutil's .pyd) cannot be replaced.
    $running = @(Get-CimInstance Win32_Process -Filter "Name = 'python.exe' OR Name = 'pythonw.exe'" |
        Where-Object { $_.CommandLine -and $_.CommandLine -like "*$ConfigFile*" })
    if ($running.Count -gt 0) {
        Invoke-Step "Stop-Process the agent's Python ($($running.Count) process(es))" {
            $running | ForEach-Object { Stop-Process -Id $_.ProcessId -Force -ErrorAction SilentlyContinue }
        }
    }
}

function Remove-AgentTask {
    if (Get-AgentTask) {
        Invoke-Step "Unregister-ScheduledTask $TaskPath$TaskName" {
            Unregister-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Confirm:$false
        }
    }
}

function Remove-AgentService {
    if (Get-AgentService) {
        Invoke-Step "sc.exe delete $ServiceName" {
            Invoke-Checked 'sc.exe' @('delete', $ServiceName) | Out-Null
        }
    }
}

function Register-AgentTask {
    Remove-AgentService
    Invoke-Step "Register-ScheduledTask $TaskPath$TaskName (SYSTEM, at startup, restarted when it stops)" {
        $action = New-ScheduledTaskAction -Execute $VenvPython `
            -Argument "-m agent --config `"$ConfigFile`"" -WorkingDirectory $InstallDir
        # At startup, and every 5 minutes with -MultipleInstances IgnoreNew: a running agent is
        # left alone, one that exited is started again. RestartCount only covers a task that
        # failed to start; Task Scheduler does not count a non-zero exit as a failure.
        $triggers = @(
            (New-ScheduledTaskTrigger -AtStartup),
            (New-ScheduledTaskTrigger -Once -At (Get-Date).AddMinutes(1) `
                -RepetitionInterval (New-TimeSpan -Minutes 5))
        )
        $principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
        # ExecutionTimeLimit zero: no limit (the default, 72 hours, would stop the agent).
        $settings = New-ScheduledTaskSettingsSet -RestartCount 999 `
            -RestartInterval (New-TimeSpan -Minutes 1) -ExecutionTimeLimit ([TimeSpan]::Zero) `
            -MultipleInstances IgnoreNew -StartWhenAvailable -AllowStartIfOnBatteries `
            -DontStopIfGoingOnBatteries -DontStopOnIdleEnd
        Register-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath -Action $action `
            -Trigger $triggers -Principal $principal -Settings $settings `
            -Description 'mPanel monitoring agent (install.ps1)' -Force | Out-Null
        Start-ScheduledTask -TaskName $TaskName -TaskPath $TaskPath
    }
}

function Register-AgentService {
    Remove-AgentTask
    Remove-AgentService
    Invoke-Step "register the Windows service $ServiceName (agent.py --install-service)" {
        Invoke-Checked $VenvPython @('-m', 'agent', '--config', $ConfigFile, '--install-service') $InstallDir | Out-Null
    }
    Invoke-Step "sc.exe failure $($ServiceName): restart after 60 s, every time; start at boot" {
        Invoke-Checked 'sc.exe' @('failure', $ServiceName, 'reset=', '86400',
            'actions=', 'restart/60000/restart/60000/restart/60000') | Out-Null
        # Also when the agent exits with an error, not only when it crashes.
        Invoke-Checked 'sc.exe' @('failureflag', $ServiceName, '1') | Out-Null
        Set-Service -Name $ServiceName -StartupType Automatic
        Start-Service -Name $ServiceName
    }
}

function Start-Agent([string]$Kind) {
    if ($Kind -eq 'service') { Register-AgentService } else { Register-AgentTask }
}

# ===== The check ================================================================================

function Test-Agent {
    if ($SkipCheck) {
        Write-Step 'skipping the check against the panel (-SkipCheck)'
        return
    }
    if ($DryRun) {
        Write-Host "would: run `"$VenvPython`" -m agent --config `"$ConfigFile`" --check"
        return
    }
    Write-Step 'checking that the panel answers and accepts the key (agent.py --check)'
    $result = Invoke-Native $VenvPython @('-m', 'agent', '--config', $ConfigFile, '--check') $InstallDir
    foreach ($line in ($result.Output -split "`n")) { if ($line) { Write-Host "  agent: $line" } }
    if ($result.ExitCode -ne 0) {
        throw "the agent's check failed (exit $($result.ExitCode)): fix the URL or key above, or the panel, and run this again"
    }
}

# ===== Install, upgrade, uninstall ==============================================================

function Install-Agent {
    $upgrade = Test-Path -LiteralPath $ConfigFile
    $work = Join-Path ([IO.Path]::GetTempPath()) ("mpanel-install-" + [guid]::NewGuid().ToString('N'))
    New-Item -ItemType Directory -Path $work | Out-Null
    $createdInstallDir = -not (Test-Path -LiteralPath $InstallDir)
    $createdDataDir = -not (Test-Path -LiteralPath $DataDir)
    $previousKind = $null
    if (Get-AgentService) { $previousKind = 'service' } elseif (Get-AgentTask) { $previousKind = 'task' }
    $changing = $false
    try {
        $config = New-AgentConfig $upgrade
        $source = Get-AgentSource $work
        $python = Find-Python
        $old = Get-AgentVersion $AgentFile
        $new = Get-AgentVersion $source
        if ($upgrade) {
            Write-Step "upgrading the mPanel agent $old -> $new (config.json is kept$(if ($config.Changed) { ', with the -Url/-ApiKey/-Interval given' }))"
        } else {
            Write-Step "installing the mPanel agent $new"
        }
        Write-Step "python: $python"

        $changing = -not $DryRun
        # Keep what an upgrade replaces, to put it back if the check fails.
        foreach ($path in @($AgentFile, $ConfigFile)) {
            if (Test-Path -LiteralPath $path) { Copy-Item -LiteralPath $path -Destination (Join-Path $work ((Split-Path -Leaf $path) + '.previous')) }
        }
        Stop-Agent
        Invoke-Step "create $InstallDir and $DataDir" {
            New-Item -ItemType Directory -Force -Path $InstallDir, $DataDir | Out-Null
        }
        Protect-DataDir
        Install-Venv $python
        Install-Pywin32
        Invoke-Step "copy agent.py to $AgentFile and compile it" {
            Copy-Item -LiteralPath $source -Destination $AgentFile -Force
            Invoke-Checked $VenvPython @('-m', 'py_compile', $AgentFile) | Out-Null
        }
        if ($config.Changed) { Write-AgentConfig $config.Document }
        Test-Agent
        $kind = 'task'
        if (Test-ServiceHost) { $kind = 'service' }
        Start-Agent $kind
        $changing = $false
    } catch {
        Write-Host "error: $($_.Exception.Message)" -ForegroundColor Red
        if ($changing) { Undo-Install $upgrade $work $createdInstallDir $createdDataDir $previousKind }
        exit 1
    } finally {
        Remove-Item -LiteralPath $work -Recurse -Force -ErrorAction SilentlyContinue
    }
    if ($DryRun) { Write-Host 'dry run: nothing was changed'; return }
    Write-Host ''
    Write-Host "The mPanel agent is installed; it reports to $($config.Document.controlPanel['url'])."
    if ($kind -eq 'service') {
        Write-Host "  Get-Service $ServiceName"
    } else {
        Write-Host "  Get-ScheduledTask -TaskName $TaskName | Get-ScheduledTaskInfo"
    }
    Write-Host "  Get-Content -Wait '$(Join-Path $DataDir 'agent.log')'"
    Write-Host "Config: $ConfigFile (SYSTEM and Administrators only). Run this again to upgrade; -Uninstall removes it."
}

# A failed install leaves nothing half-done: a fresh install is removed, an upgrade gets its
# previous agent.py and config.json back and is started again.
function Undo-Install([bool]$Upgrade, [string]$Work, [bool]$CreatedInstallDir, [bool]$CreatedDataDir, $PreviousKind) {
    Write-Host 'rolling back'
    if ($Upgrade) {
        foreach ($path in @($AgentFile, $ConfigFile)) {
            $saved = Join-Path $Work ((Split-Path -Leaf $path) + '.previous')
            if (Test-Path -LiteralPath $saved) { Copy-Item -LiteralPath $saved -Destination $path -Force }
        }
        if ($PreviousKind) { Start-Agent $PreviousKind }
        Write-Host 'the previous agent.py and config.json are back in place'
        return
    }
    Remove-AgentTask
    Remove-AgentService
    if ($CreatedInstallDir) { Remove-Item -LiteralPath $InstallDir -Recurse -Force -ErrorAction SilentlyContinue }
    if ($CreatedDataDir) {
        Remove-Item -LiteralPath $DataDir -Recurse -Force -ErrorAction SilentlyContinue
    } else { # state kept by an earlier -Uninstall: only the config this run wrote goes
        Remove-Item -LiteralPath $ConfigFile -Force -ErrorAction SilentlyContinue
    }
    Write-Host 'nothing was installed'
}

function Uninstall-Agent {
    Stop-Agent
    Remove-AgentTask
    Remove-AgentService
    if (Test-Path -LiteralPath $InstallDir) {
        Invoke-Step "remove $InstallDir" { Remove-Item -LiteralPath $InstallDir -Recurse -Force }
    }
    if ($Purge) {
        if (Test-Path -LiteralPath $DataDir) {
            Invoke-Step "remove $DataDir (state, buffered samples, logs)" {
                Remove-Item -LiteralPath $DataDir -Recurse -Force
            }
        }
    } else {
        if (Test-Path -LiteralPath $ConfigFile) {
            Invoke-Step "remove $ConfigFile" { Remove-Item -LiteralPath $ConfigFile -Force }
        }
        if (Test-Path -LiteralPath $DataDir) { Write-Host "keeping $DataDir (-Purge removes it)" }
    }
    if ($DryRun) { Write-Host 'dry run: nothing was changed' } else { Write-Host 'the mPanel agent is uninstalled' }
}

# Read here: inside a function, $PSBoundParameters is that function's own.
$script:IntervalGiven = $PSBoundParameters.ContainsKey('Interval')
Assert-Administrator
Assert-Arguments
if ($Uninstall) { Uninstall-Agent } else { Install-Agent }
