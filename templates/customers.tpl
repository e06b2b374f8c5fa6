% rebase('base.tpl', title=title, session=session)
% if error:
<p class="error card" role="alert">{{error}}</p>
% end
<section class="card">
  <h1>Customers <span class="count">{{len(customers)}}</span></h1>
  <p class="muted">A customer's users log in and see that customer's servers, their data and their alerts, and nothing else. Servers without a customer are the staff's only.</p>
  <table class="list">
    <thead><tr><th>Name</th><th>Slug</th><th>Since</th><th class="num">Traffic this cycle</th></tr></thead>
    <tbody>
    % for c in customers:
      % t = traffic_of.get(c.id)
      <tr><td><a href="/customers/{{c.id}}">{{c.name}}</a></td><td><code>{{c.slug}}</code></td><td>{{c.created_at.strftime('%Y-%m-%d')}}</td><td class="num traffic{{' bad' if t and t['level'] else ''}}" title="{{('cycle %s to %s' % (t['start'], t['end'])) if t else ''}}">{{t['text'] if t else ''}}</td></tr>
    % end
    % if not customers:
      <tr><td colspan="4" class="muted">No customers yet: every server is the staff's.</td></tr>
    % end
    </tbody>
  </table>
  % if access.may_change:
  <form method="post" action="/customers" class="row-form">
    <input type="hidden" name="csrf_token" value="{{session.csrf_token}}">
    <label>Name <input name="name" value="{{name}}" required maxlength="100" size="20"></label>
    <label>Slug <input name="slug" maxlength="40" size="12" pattern="[a-z0-9\-]{1,40}" placeholder="from the name"></label>
    <button type="submit" class="small">Add customer</button>
  </form>
  % end
</section>
