% # A customer's public status page, on the customer's page (staff) and below a customer user's servers table.
<section class="card" id="status-page">
  <h2>Status page</h2>
  % address = '/status/' + status_customer.slug
  % if status_customer.status_page:
  <p>On, public, no login: <a href="{{address}}">{{address}}</a> shows up/down and 24 h / 7 d / 30 d uptime of the servers published on it, under its title. No metric, hostname or address.</p>
  % else:
  <p class="muted">Off: <code>{{address}}</code> is "not found", like an address no customer has.</p>
  % end
  <p class="muted">Published (each server's Manage box): {{', '.join(s.name for s in published) if published else 'none yet'}}.</p>
  % if access.may_change:
  <form method="post" action="/customers/{{status_customer.id}}/status-page" class="stack">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label><input type="checkbox" name="status_page" value="1" {{'checked' if status_customer.status_page else ''}}> Public status page on</label>
    <label>Title <input name="status_title" value="{{status_customer.status_title}}" maxlength="100" placeholder="Status"></label>
    <button type="submit" class="small">Save</button>
  </form>
  % end
</section>
