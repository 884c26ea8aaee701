//! A self-contained API docs page: no CDN, no external script (政务外网 has no internet).
//! It reads `/api/v1/openapi.json` and lists every operation, its parameters and responses.

pub const PAGE: &str = r#"<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>Credit Gateway API 文档</title>
<style>
body{font-family:system-ui,"Noto Sans CJK SC",sans-serif;margin:2rem;max-width:70rem;color:#1d2430}
h1{font-size:1.5rem} .op{border:1px solid #ccd3dd;border-radius:6px;margin:1rem 0;padding:.6rem 1rem}
.m{display:inline-block;min-width:4rem;font-weight:700;text-transform:uppercase}
.sec{color:#5a3d8a;font-size:.9rem;margin:.2rem 0} .get{color:#0a6b2f}.post{color:#8a4b00} code,pre{background:#f3f5f8;border-radius:4px;padding:.1rem .3rem}
pre{padding:.6rem;overflow:auto;max-height:24rem} details{margin:.3rem 0}
</style></head><body>
<h1>信用信息交换网关 API · Credit Gateway API</h1>
<p>OpenAPI 3.1: <a href="/api/v1/openapi.json">/api/v1/openapi.json</a></p>
<p>认证 Authentication: <code>Authorization: Bearer cgk_…</code> (API key, <code>credential issue</code>), a registered client
certificate on the HTTPS listener, or a dashboard login. Each operation names the permission it needs and the roles that hold it.</p>
<div id="ops">Loading…</div>
<script>
fetch('/api/v1/openapi.json').then(r=>r.json()).then(doc=>{
  const root=document.getElementById('ops'); root.textContent='';
  const el=(tag,cls,text)=>{const e=document.createElement(tag); if(cls)e.className=cls; if(text!==undefined)e.textContent=text; return e;};
  // The descriptions are the handlers' doc comments, in markdown: paragraphs and `code`.
  const md=(tag,text)=>{const out=el('div'); for(const para of (text||'').split(/\n\s*\n/)){
    const p=el(tag); para.replace(/\s*\n\s*/g,' ').split('`').forEach((part,i)=>p.append(i%2?el('code','',part):document.createTextNode(part)));
    out.append(p);} return out;};
  for(const [path,item] of Object.entries(doc.paths)){
    for(const [method,op] of Object.entries(item)){
      const box=el('div','op'); const h=el('div');
      h.append(el('span','m '+method,method),el('code','',path),el('span','',' — '),md('span',op.summary).firstChild);
      box.append(h); if(op.description) box.append(md('p',op.description));
      const perm=op['x-permission'];
      box.append(el('div','sec', perm ? `权限 Permission: ${perm} — 角色 roles: ${(op['x-roles']||[]).join(', ')} — 认证 auth: ${(op.security||[]).map(o=>Object.keys(o).join('+')).join(' | ')}` : '公开 Public: no credential needed'));
      for(const p of (op.parameters||[])){const d=md('span',`参数 parameter \`${p.name}\` (${p.in})${p.required?' *':''}: ${p.description||''}`); box.append(d);}
      for(const [code,resp] of Object.entries(op.responses||{})){
        const d=el('details'); const s=el('summary','',code+' '); s.append(md('span',resp.description).firstChild); d.append(s);
        d.append(el('pre','',JSON.stringify(resp.content||{},null,2))); box.append(d);
      }
      root.append(box);
    }
  }
  const s=el('details'); s.append(el('summary','','Schemas / 数据模式'));
  s.append(el('pre','',JSON.stringify(doc.components.schemas,null,2))); root.append(s);
}).catch(e=>{document.getElementById('ops').textContent='Failed to load the OpenAPI document: '+e;});
</script></body></html>
"#;
