//! A tiny per-pod file system, enough for `kubectl cp` (which runs `tar` in the pod) and for
//! `cat`/`ls`/`test` on what was copied in.

use std::collections::BTreeMap;

/// Absolute path (without trailing slash) → contents.
pub type Files = BTreeMap<String, Vec<u8>>;

pub fn normalize(path: &str, cwd: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

pub fn is_dir(files: &Files, path: &str) -> bool {
    path == "/" || {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        files.keys().any(|k| k.starts_with(&prefix))
    }
}

fn octal(field: &[u8]) -> usize {
    let s = String::from_utf8_lossy(field);
    usize::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).unwrap_or(0)
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// Unpacks a tar stream (ustar, with PAX path records) below `dir`.
pub fn untar(files: &mut Files, dir: &str, data: &[u8]) -> Result<usize, String> {
    let mut pos = 0;
    let mut count = 0;
    let mut pax_path: Option<String> = None;
    while pos + 512 <= data.len() {
        let h = &data[pos..pos + 512];
        if h.iter().all(|b| *b == 0) {
            break;
        }
        let size = octal(&h[124..136]);
        let kind = h[156];
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        let body_start = pos + 512;
        let body_end = body_start
            .checked_add(size)
            .filter(|e| *e <= data.len())
            .ok_or("tar: unexpected end of archive")?;
        let body = &data[body_start..body_end];
        pos = body_start + size.div_ceil(512) * 512;
        match kind {
            b'x' => {
                for rec in String::from_utf8_lossy(body).lines() {
                    if let Some((_, kv)) = rec.split_once(' ')
                        && let Some(p) = kv.strip_prefix("path=")
                    {
                        pax_path = Some(p.to_owned());
                    }
                }
                continue;
            }
            b'g' => continue,
            _ => {}
        }
        let name = pax_path.take().unwrap_or(name);
        if kind == b'0' || kind == 0 {
            files.insert(normalize(&name, dir), body.to_vec());
            count += 1;
        }
    }
    Ok(count)
}

fn header(name: &str, size: usize, kind: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = name.as_bytes();
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    let mode: &[u8] = if kind == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    h[100..108].copy_from_slice(mode);
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// `tar cf - PATH`: entries are named without the leading slash, like GNU tar does.
pub fn tar(files: &Files, path: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let dir_prefix = format!("{}/", path.trim_end_matches('/'));
    let mut found = false;
    if is_dir(files, path) {
        found = true;
        out.extend_from_slice(&header(
            &format!("{}/", path.trim_start_matches('/')),
            0,
            b'5',
        ));
    }
    for (name, data) in files
        .iter()
        .filter(|(k, _)| *k == path || k.starts_with(&dir_prefix))
    {
        found = true;
        out.extend_from_slice(&header(name.trim_start_matches('/'), data.len(), b'0'));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    found.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trip() {
        let mut files = Files::new();
        files.insert("/tmp/a/x.txt".into(), b"hello".to_vec());
        let archive = tar(&files, "/tmp/a").unwrap();
        let mut copy = Files::new();
        assert_eq!(untar(&mut copy, "/srv", &archive).unwrap(), 1);
        assert_eq!(copy["/srv/tmp/a/x.txt"], b"hello");
        assert!(is_dir(&copy, "/srv/tmp"));
        assert_eq!(normalize("../b/./c", "/a/z"), "/a/b/c");
    }
}
