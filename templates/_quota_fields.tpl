      % # The traffic quota's fields, for a server (manage box) or a customer (its page).
      <label>Billing day <input name="billing_day" type="number" min="1" max="31" value="{{holder.billing_day}}" required></label>
      <label>Allowance a cycle <input name="allowance" value="{{allowance_text(holder.traffic_allowance)}}" placeholder="none, or 500 GB, 2 TB" maxlength="30"></label>
      <label>Counts <select name="basis">
        % for basis, (label, _count) in traffic_bases.items():
        <option value="{{basis}}" {{'selected' if basis == holder.traffic_basis else ''}}>{{label}}</option>
        % end
      </select></label>
      <p class="muted">Traffic of {{what}} from the billing day's midnight (UTC; past a month's end, its last day); alerts at 80 % and 100 % of the allowance.</p>
