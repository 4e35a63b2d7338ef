//! Checks for what writers send, run at the API edge before anything is proposed, so a bad
//! request is refused with the name of the offending field and nothing is written.

use thiserror::Error;

/// A field of a write that cannot be accepted; `field` names it as the API calls it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    pub field: String,
    pub reason: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub const MAX_LABEL_KEY_LEN: usize = 317; // prefix (253) + '/' + name (63)
pub const MAX_LABEL_VALUE_LEN: usize = 63;
pub const MAX_LABELS: usize = 64;
pub const MAX_PORTS: usize = 64;
pub const MAX_FREE_TEXT_LEN: usize = 253;

/// A DNS-1123 label: 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn dns_label(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > 63 {
        return Err(InvalidField::new(
            field,
            format!("{value:?} is longer than 63 characters"),
        ));
    }
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if !value.chars().all(valid_char) {
        return Err(InvalidField::new(
            field,
            format!("{value:?} may only contain lowercase letters, digits and '-'"),
        ));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(InvalidField::new(
            field,
            format!("{value:?} must start and end with a letter or digit"),
        ));
    }
    Ok(())
}

pub const MAX_REQUEST_CLIENT_LEN: usize = 128;

/// A request id's client part: 1–128 characters of printable ASCII without spaces, so that it
/// reads unambiguously in logs.
pub fn request_client(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if value.len() > MAX_REQUEST_CLIENT_LEN {
        return Err(InvalidField::new(
            field,
            format!("longer than {MAX_REQUEST_CLIENT_LEN} characters"),
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidField::new(
            field,
            "may only contain printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

/// A TCP port: 1–65535.
pub fn port(field: &str, value: u32) -> Result<u16, InvalidField> {
    match u16::try_from(value) {
        Ok(0) => Err(InvalidField::new(field, "port 0 is not allowed")),
        Ok(p) => Ok(p),
        Err(_) => Err(InvalidField::new(
            field,
            format!("port {value} is above 65535"),
        )),
    }
}

/// Free text such as a zone or pod name: printable, at most 253 characters.
pub fn free_text(field: &str, value: &str) -> Result<(), InvalidField> {
    if value.len() > MAX_FREE_TEXT_LEN {
        return Err(InvalidField::new(
            field,
            format!("longer than {MAX_FREE_TEXT_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidField::new(field, "contains control characters"));
    }
    Ok(())
}

/// A label key (`[prefix/]name`) and value, following Kubernetes' rules loosely: printable,
/// bounded, and the key non-empty.
pub fn label(key: &str, value: &str) -> Result<(), InvalidField> {
    let field = format!("labels[{key}]");
    if key.is_empty() {
        return Err(InvalidField::new("labels", "a label key must not be empty"));
    }
    if key.len() > MAX_LABEL_KEY_LEN {
        return Err(InvalidField::new(field, "key is too long"));
    }
    if value.len() > MAX_LABEL_VALUE_LEN {
        return Err(InvalidField::new(
            field,
            format!("value is longer than {MAX_LABEL_VALUE_LEN} characters"),
        ));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if !key.chars().all(ok) || !value.chars().all(ok) {
        return Err(InvalidField::new(
            field,
            "may only contain letters, digits, '-', '_', '.' and '/'",
        ));
    }
    Ok(())
}

/// A service port as a writer gave it: index (for the field name), name, port and protocol
/// (empty means tcp).
pub fn service_port(
    index: usize,
    name: &str,
    port_number: u32,
    protocol: &str,
) -> Result<super::ServicePort, InvalidField> {
    let protocol = protocol.parse::<super::Protocol>().map_err(|()| {
        InvalidField::new(
            format!("ports[{index}].protocol"),
            format!("{protocol:?} is not tcp, http or grpc"),
        )
    })?;
    free_text(&format!("ports[{index}].name"), name)?;
    Ok(super::ServicePort {
        name: name.to_owned(),
        port: port(&format!("ports[{index}].port"), port_number)?,
        protocol,
    })
}

/// A load balancer name; empty means the proxy's default.
pub fn load_balancer(value: &str) -> Result<Option<super::LoadBalancer>, InvalidField> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|()| {
        InvalidField::new(
            "policy.load_balancer",
            format!("{value:?} is not round_robin, least_request or p2c_ewma"),
        )
    })
}

/// Bounds on how many ports and labels one service may have.
pub fn service_sizes(ports: usize, labels: usize) -> Result<(), InvalidField> {
    if ports > MAX_PORTS {
        return Err(InvalidField::new(
            "ports",
            format!("{ports} ports is more than {MAX_PORTS}"),
        ));
    }
    if labels > MAX_LABELS {
        return Err(InvalidField::new(
            "labels",
            format!("{labels} labels is more than {MAX_LABELS}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_follow_rfc_1123() {
        assert!(dns_label("service", "web-1").is_ok());
        assert!(dns_label("service", "a").is_ok());
        for bad in ["", "-web", "web-", "Web", "web_1", "web.1", &"a".repeat(64)] {
            let err = dns_label("service", bad).err();
            assert_eq!(
                err.map(|e| e.field),
                Some("service".to_owned()),
                "{bad:?} must be refused naming the field"
            );
        }
    }

    #[test]
    fn ports_must_be_between_1_and_65535() {
        assert_eq!(port("port", 1), Ok(1));
        assert_eq!(port("port", 65535), Ok(65535));
        assert!(port("port", 0).is_err());
        assert!(port("port", 65536).is_err());
    }

    #[test]
    fn labels_are_bounded_and_printable() {
        assert!(label("app.kubernetes.io/name", "web").is_ok());
        assert!(label("", "x").is_err());
        assert!(label("app", &"v".repeat(64)).is_err());
        assert!(label("app", "has space").is_err());
    }
}
