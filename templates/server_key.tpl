% rebase('base.tpl', title=title, session=session)
<section class="card key-card">
  <h1>{{heading}}</h1>
  <p class="warn"><strong>Copy the key now: it is shown only this once.</strong> The panel keeps only a hash of it.</p>
  <div class="copy-row">
    <code id="api-key" class="secret">{{key}}</code>
    <button type="button" class="small" data-copy="api-key">Copy</button>
  </div>

  <h2>Install the agent</h2>
  <h3>Linux (systemd, or cron where there is no systemd)</h3>
  <div class="copy-row"><code id="cmd-linux" class="command">{{commands['linux']}}</code><button type="button" class="small" data-copy="cmd-linux">Copy</button></div>
  <h3>Windows (PowerShell as Administrator)</h3>
  <div class="copy-row"><code id="cmd-windows" class="command">{{commands['windows']}}</code><button type="button" class="small" data-copy="cmd-windows">Copy</button></div>
  <h3>Cron, without root (a line for <code>crontab -e</code>; put agent.py in ~/mpanel-agent)</h3>
  <div class="copy-row"><code id="cmd-cron" class="command">{{commands['cron']}}</code><button type="button" class="small" data-copy="cmd-cron">Copy</button></div>

  <h3>Or download a ready bundle</h3>
  <form method="post" action="/servers/{{server.id}}/bundle" class="inline-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <input type="hidden" name="api_key" value="{{key}}">
    <button type="submit" class="secondary">Download mpanel-agent.tar.gz</button>
    <span class="muted">agent.py, install.sh and config.json with this key: <code>tar xzf mpanel-agent.tar.gz &amp;&amp; cd mpanel-agent &amp;&amp; sudo ./install.sh</code></span>
  </form>
  <p><a href="/servers/{{server.id}}">Go to {{server.name}}</a> — it shows as “never seen” until the agent reports.</p>
</section>
