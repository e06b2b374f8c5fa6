% span = len(query['columns'])
% oob_attribute = ' hx-swap-oob="true"' if oob else ''
% if offset < matched and offset < live_rows:
<tr id="more" class="more"{{!oob_attribute}} hx-get="/servers/rows?offset={{offset}}&amp;{{query['link']}}" hx-trigger="revealed" hx-swap="outerHTML" hx-sync="#filters:queue last"><td colspan="{{span}}">{{'{:,}'.format(offset)}} of {{'{:,}'.format(matched)}} shown · <a href="/servers?rows={{offset + page_rows}}&amp;{{query['link']}}">Show more</a></td></tr>
% elif offset < matched:
<tr id="more" class="more"{{!oob_attribute}}><td colspan="{{span}}">{{'{:,}'.format(offset)}} of {{'{:,}'.format(matched)}} shown: filter the table to see the others.</td></tr>
% else:
<tr id="more" class="more end"{{!oob_attribute}} hidden><td colspan="{{span}}"></td></tr>
% end
