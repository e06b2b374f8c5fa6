% rebase('base.tpl', title=title, session=session, favicon=favicon)
{{!summary}}
<form id="filters" class="filters" action="/servers" method="get"
      hx-get="/servers" hx-target="#servers-table" hx-swap="outerHTML" hx-push-url="true" hx-sync="this:replace"
      hx-trigger="input changed delay:250ms from:#filter-q, change from:#filter-status, change from:#filter-customer, change from:.column-choice, submit">
  <input id="filter-q" type="search" name="q" value="{{query['q']}}" placeholder="Filter by name or hostname" aria-label="Filter by name or hostname" maxlength="100">
  <select id="filter-status" name="status" aria-label="Status">
    <option value="">All statuses</option>
    % for s in ('online', 'offline', 'never seen'):
    <option value="{{s}}" {{'selected' if query['status'] == s else ''}}>{{s.capitalize()}}</option>
    % end
  </select>
  % if access.staff and customers:
  <select id="filter-customer" name="customer" aria-label="Customer">
    <option value="">All customers</option>
    % for c in customers:
    <option value="{{c.id}}" {{'selected' if query['customer'] == c.id else ''}}>{{c.name}}</option>
    % end
  </select>
  % end
  <details class="columns"{{' open' if query['show'] else ''}}>
    <summary>Service columns</summary>
    % for service in service_names:
    <label><input class="column-choice" type="checkbox" name="show" value="{{service}}" {{'checked' if service in query['show'] else ''}}> {{service}}</label>
    % end
  </details>
  <details class="columns"{{' open' if query['hide'] else ''}}>
    <summary>Hide columns</summary>
    % for key, label in hideable:
    <label><input class="column-choice" type="checkbox" name="hide" value="{{key}}" {{'checked' if key in query['hide'] else ''}}> {{label}}</label>
    % end
  </details>
  <input type="hidden" name="sort" value="{{query['sort']}}">
  <input type="hidden" name="dir" value="{{query['dir']}}">
  <noscript><button type="submit">Filter</button></noscript>
</form>
<div class="table-wrap">
% include('_servers_table.tpl', oob=False)
</div>
% if get('status_customer'):
% include('_status_page_box.tpl')
% end
% if not total:
<div class="empty card">
  <p><strong>No servers yet.</strong></p>
  % if access.may_change:
  <p><a class="button" href="/servers/new">Add your first server</a> and paste one line on it.</p>
  % else:
  <p>An admin adds servers; they will show up here.</p>
  % end
</div>
% end
