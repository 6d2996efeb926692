//! The store key of a public entry, as Squid's `storeKeyPublic` computes it: MD5 over one
//! octet holding the method's id, then the URL. Squid keys a digest's entries this way and
//! looks a request up the same way (`storeKeyPublicByRequest`, no Vary and no key scope for
//! a plain request).

use md5::{Digest as _, Md5};

/// Squid's `Http::MethodType` ids of the methods whose responses a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SquidMethod {
    Get = 1,
    Post = 2,
    Put = 3,
    Head = 4,
}

/// 16 octets identifying one public store entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey(pub [u8; 16]);

impl StoreKey {
    /// The key of `method` `url`; `url` is the absolute URL as Squid stores it.
    pub fn public(method: SquidMethod, url: impl AsRef<[u8]>) -> Self {
        let mut md5 = Md5::new();
        md5.update([method as u8]);
        md5.update(url);
        Self(md5.finalize().into())
    }

    /// The key of a GET for `url`: what a digest is consulted with.
    pub fn get(url: impl AsRef<[u8]>) -> Self {
        Self::public(SquidMethod::Get, url)
    }

    /// The four 32-bit words the digest's hash functions start from, read as Squid does
    /// (`htonl` of each native word: the octets in network order).
    pub(super) fn words(&self) -> [u32; 4] {
        let k = &self.0;
        [0, 4, 8, 12].map(|i| u32::from_be_bytes([k[i], k[i + 1], k[i + 2], k[i + 3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(key: StoreKey) -> String {
        key.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Keys of objects a Squid 5.7 held and that its digest contained (see
    /// `cache_digest::tests`); computed independently as MD5(0x01 ‖ URL).
    #[test]
    fn get_keys_are_md5_of_method_id_then_url() {
        assert_eq!(
            hex(StoreKey::get("http://127.0.0.1:18080/a")),
            "a2d7c535d32af06858202e2f67195e98"
        );
        assert_eq!(
            hex(StoreKey::get("http://127.0.0.1:18080/b/c")),
            "9763df1a34514ad9b418ce72f29a9bf1"
        );
        assert_eq!(
            hex(StoreKey::get("http://127.0.0.1:18080/d?x=1")),
            "7e276a5ed004c058a79c701ca361a64a"
        );
    }

    #[test]
    fn the_method_is_part_of_the_key() {
        let url = "http://example.com/";
        assert_ne!(StoreKey::public(SquidMethod::Head, url), StoreKey::get(url));
    }

    #[test]
    fn words_are_big_endian() {
        let key = StoreKey(core::array::from_fn(|i| i as u8));
        assert_eq!(
            key.words(),
            [0x0001_0203, 0x0405_0607, 0x0809_0a0b, 0x0c0d_0e0f]
        );
    }
}
