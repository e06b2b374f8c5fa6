% rebase('base.tpl', title=title, session=session)
<p class="crumbs"><a href="/customers">Customers</a> / <span>{{customer.name}}</span></p>
% if error:
<p class="error card" role="alert">{{error}}</p>
% end
<section class="card">
  <h1>{{customer.name}}</h1>
  <p class="muted">Slug <code>{{customer.slug}}</code> · since {{customer.created_at.strftime('%Y-%m-%d')}} · <a href="/servers?customer={{customer.id}}">its servers in the table</a> · <a href="/alerts?customer={{customer.id}}">its alerts</a></p>
  <p class="traffic{{' bad' if traffic['level'] else ''}}" id="customer-traffic">Traffic this cycle ({{traffic['start']}} to {{traffic['end']}}, all its servers): {{traffic['text']}}</p>
  <h2>Servers <span class="count">{{len(servers)}}</span></h2>
  <table class="list">
    <tbody>
    % for s in servers:
      <tr><td><a href="/servers/{{s.id}}">{{s.name}}</a></td></tr>
    % end
    % if not servers:
      <tr><td class="muted">No servers: move one here from its page (Manage), or add one.</td></tr>
    % end
    </tbody>
  </table>
  <h2>Users <span class="count">{{len(users)}}</span></h2>
  <table class="list">
    <thead><tr><th>Username</th><th>Role</th><th>Since</th>{{!'<th></th>' if access.may_change else ''}}</tr></thead>
    <tbody>
    % for u in users:
      <tr><td>{{u.username}}</td><td>{{u.role}}</td><td>{{u.created_at.strftime('%Y-%m-%d')}}</td>
      % if access.may_change:
      <td><form method="post" action="/customers/{{customer.id}}/users/{{u.id}}/delete" class="inline"><input type="hidden" name="csrf_token" value="{{session.csrf_token}}"><button class="link" type="submit">remove</button></form></td>
      % end
      </tr>
    % end
    % if not users:
      <tr><td colspan="4" class="muted">No users: nobody of this customer can log in yet.</td></tr>
    % end
    </tbody>
  </table>
</section>
% include('_status_page_box.tpl', status_customer=customer)
% if access.may_change:
<section class="card manage">
  <h2>Manage</h2>
  <div class="manage-grid">
    <form method="post" action="/customers/{{customer.id}}/users" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Username <input name="username" value="{{username}}" maxlength="64" required autocomplete="off"></label>
      <label>Their password <input name="password" type="password" minlength="8" required autocomplete="new-password"></label>
      <label>Role <select name="role">
        % for role in roles:
        <option value="{{role.name}}">{{role.label}}</option>
        % end
      </select></label>
      <label>Your password <input name="your_password" type="password" required autocomplete="current-password"></label>
      <button type="submit" class="small">Add user</button>
    </form>
    <form method="post" action="/customers/{{customer.id}}/quota" class="stack" id="quota">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      % include('_quota_fields.tpl', holder=customer, what="all this customer's servers together")
      <button type="submit" class="small secondary">Set traffic quota</button>
    </form>
    <form method="post" action="/customers/{{customer.id}}/rename" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Name <input name="name" value="{{customer.name}}" maxlength="100" required></label>
      <button type="submit" class="small">Rename</button>
    </form>
    <form method="post" action="/customers/{{customer.id}}/delete" class="stack">
      <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
      <label>Delete the customer: its {{len(servers)}} server(s) go back to the staff only, every sample kept; its {{len(users)}} user(s) are deleted and logged out. Type its slug <code>{{customer.slug}}</code>
        <input name="confirm_slug" autocomplete="off" required></label>
      <button type="submit" class="small danger">Delete customer</button>
    </form>
  </div>
</section>
% end

<section class="card">
  <h2>Two-factor</h2>
  <p>{{'Required: this customer’s users set up two-factor on their account page before they see anything else.' if customer.require_two_factor else 'Not required: each of this customer’s users may set it up on their account page.'}}</p>
  % if access.may_change:
  <form method="post" action="/customers/{{customer.id}}/two-factor" class="inline">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <input type="hidden" name="required" value="{{'0' if customer.require_two_factor else '1'}}">
    <button type="submit" class="small {{'secondary' if customer.require_two_factor else ''}}">{{'Stop requiring two-factor' if customer.require_two_factor else 'Require two-factor for its users'}}</button>
  </form>
  % end
</section>
