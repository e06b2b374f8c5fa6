% rebase('base.tpl', title=title, session=session)
<section class="summary">
  <div><strong>{{len(servers)}}</strong> servers</div>
  <div class="online"><strong>{{counts['online']}}</strong> online</div>
  <div class="offline"><strong>{{counts['offline']}}</strong> offline</div>
  <div class="never"><strong>{{counts['never seen']}}</strong> never seen</div>
</section>
<table class="servers">
  <thead>
    <tr><th>Name</th><th>Hostname</th><th>Status</th><th>Last seen</th>
        <th class="num">CPU</th><th class="num">Memory</th><th class="num">Disk</th>
        <th class="num">Load</th><th>Agent</th></tr>
  </thead>
  % include('_server_rows.tpl', servers=servers)
</table>
% if not servers:
<p class="empty">No servers yet. Add one with <code>python -m panel add-server NAME</code>.</p>
% end
