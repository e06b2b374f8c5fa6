<div id="charts" hx-get="/servers/{{server.id}}/charts?range={{chart_range.name}}" hx-trigger="every 60s" hx-target="this" hx-swap="outerHTML">
  <div class="card-head">
    <h2>History</h2>
    <nav class="ranges" aria-label="Range">
      % for name in ranges:
      <a href="/servers/{{server.id}}?range={{name}}" class="{{'active' if name == chart_range.name else ''}}" hx-get="/servers/{{server.id}}/charts?range={{name}}" hx-target="#charts" hx-swap="outerHTML" hx-push-url="/servers/{{server.id}}?range={{name}}" {{!'aria-current="true"' if name == chart_range.name else ''}}>{{name}}</a>
      % end
    </nav>
  </div>
  <div class="charts" data-processes-url="/servers/{{server.id}}/processes">
    % for key, chart in charts:
    <div class="chart-cell">
    {{!chart}}
    <p class="downloads">Download <a href="/servers/{{server.id}}/charts.csv?range={{chart_range.name}}&amp;chart={{key}}" download>CSV</a> · <a href="/servers/{{server.id}}/charts.json?range={{chart_range.name}}&amp;chart={{key}}" download>JSON</a></p>
    </div>
    % end
  </div>
  <p class="hint">Times in UTC. Gaps are times the server did not report.</p>
</div>
