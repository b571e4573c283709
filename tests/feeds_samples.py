"""Sample feeds and helpers shared by the tests/test_feeds_*.py files (written for the tests, not real data)."""

from __future__ import annotations

import gzip
from pathlib import Path

from pfdb.categories import CategoryResolver  # noqa: F401  (re-exported for tests that build trees)
from pfdb.models import Category, Product, ProductImage

PFDB_CSV = (
    "sku,name,description,price,compare_at_price,currency,brand,gtin,inventory_quantity,status,category,images\n"
    'P-1,Chemise à carreaux,"<p>Coton bio, coupe ""droite"".</p>\n<p>Lavable à 40°</p>",29.90,39.90,EUR,Maison Ö,'
    "'7350177880121,5,active,Vêtements > Chemises,https://img.example.com/p1-a.jpg|https://img.example.com/p1-b.jpg\n"
    "P-2,Pantalon,Toile,49,,EUR,Maison Ö,,2,active,Vêtements > Pantalons,https://img.example.com/p2.jpg\n"
    "'P-3,Écharpe 日本,,15.5,,EUR,,,0,draft,Accessoires,\n"
)

SHOPIFY_CSV = (
    "Handle,Title,Body (HTML),Vendor,Type,Tags,Published,Option1 Name,Option1 Value,Variant SKU,Variant Grams,"
    "Variant Inventory Qty,Variant Price,Variant Compare At Price,Variant Barcode,Image Src,Image Position,"
    "Variant Image,Gift Card\n"
    'basic-tee,Basic Tee,"<p>Soft cotton.</p>\n<p>Unisex</p>",Acme,Shirts,"summer, cotton",true,Size,Small,,200,3,'
    "19.00,25.00,,https://cdn.example.com/tee-1.jpg,1,,false\n"
    "basic-tee,,,,,,,,Medium,,210,4,19.00,25.00,,https://cdn.example.com/tee-2.jpg,2,,\n"
    "basic-tee,,,,,,,,Large,,220,0,21.00,25.00,,,,https://cdn.example.com/tee-2.jpg,\n"
    "basic-tee,,,,,,,,,,,,,,,https://cdn.example.com/tee-3.jpg,3,,\n"
    "coffee-mug,Coffee Mug,<b>Stoneware</b>,Acme,Kitchen > Mugs,,false,Title,Default Title,MUG-1,350,12,9.50,,"
    "'4006381333931,https://cdn.example.com/mug.jpg,1,,false\n"
)

GOOGLE_TSV = (
    "id\ttitle\tdescription\tlink\timage_link\tadditional_image_link\tprice\tsale_price\tbrand\tgtin\tmpn\t"
    "google_product_category\tproduct_type\tavailability\tshipping_weight\n"
    "G-1\tKettle\tSteel kettle\thttps://shop.example.com/k\thttps://img.example.com/k1.jpg\t"
    "https://img.example.com/k2.jpg,https://img.example.com/k3.jpg\t15.00 USD\t\tAcme\t4006381333931\tK-100\t"
    "Home & Garden > Kitchen & Dining\tKitchen > Kettles\tin_stock\t1.5 kg\n"
    "G-2\tToaster\tTwo slots\thttps://shop.example.com/t\thttps://img.example.com/t.jpg\t\t25.00 USD\t19.99 USD\t"
    "Acme\t\t\t536\tKitchen > Toasters\tin_stock\t\n"
    "G-3\tBroken\tx\t\t\t\tfifteen dollars\t\t\t\t\t\t\tin_stock\t\n"
)

RETAIL_JSONL = (
    '{"id": "R-1", "title": "Pen", "brands": ["Acme"], "categories": ["Office > Pens"], '
    '"priceInfo": {"price": "16", "originalPrice": "45.0", "currencyCode": "USD"}, "availability": "IN_STOCK", '
    '"availableQuantity": 50, "images": [{"uri": "https://img.example.com/pen.jpg"}], '
    '"colorInfo": {"colors": ["Blue"]}}\n'
    '{"id": "R-2", "title": "Cap", "categories": ["Apparel"], "priceInfo": {"price": "20", "currencyCode": "USD"}, '
    '"availability": "SOMETIMES"}\n'
)


def write(
    tmp_path: Path,
    name: str,
    text: str,
    *,
    bom: bool = False,
    crlf: bool = False,
    gz: bool = False,
    encoding: str = "utf-8",
) -> Path:
    """Write a sample feed: optionally with a BOM, CRLF line ends (inside quotes too) or gzipped."""
    if crlf:
        text = text.replace("\n", "\r\n")
    data = ("\ufeff" if bom else "").encode(encoding) + text.encode(encoding)
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def product(sku: str) -> Product:
    return Product.get(Product.sku == sku)


def image_urls(sku: str) -> list[str]:
    p = product(sku)
    return [i.url for i in ProductImage.select().where(ProductImage.product == p).order_by(ProductImage.position)]


def category_path(p: Product) -> str | None:
    return p.category.breadcrumb() if p.category_id else None


def catalogue_state() -> dict:
    """Everything an import decides, without ids and timestamps: for 'same final state' comparisons.

    A few queries (one per category for its breadcrumb), not three per product: the interrupt
    tests compare 300 products twice each.
    """
    fields = [f for f in Product._meta.sorted_fields if f.name not in ("id", "created_at", "updated_at", "category")]
    breadcrumbs = {c.id: c.breadcrumb() for c in Category.select()}
    images: dict[int, list[tuple]] = {}
    for i in ProductImage.select().order_by(ProductImage.product, ProductImage.position, ProductImage.content_hash):
        images.setdefault(i.product_id, []).append((i.url, i.position, i.is_primary, i.content_hash))
    state = {}
    for p in Product.select().order_by(Product.sku):
        state[p.sku] = (
            tuple(getattr(p, f.name) for f in fields),
            breadcrumbs.get(p.category_id),
            tuple(images.get(p.id, ())),
        )
    return {"products": state, "categories": sorted(breadcrumbs.values())}


# WooCommerce's product export (its own column names, a Weight unit in the header, variations
# naming their parent by SKU or id:N in Parent, comma-separated Images and Categories).
WOO_CSV = (
    "ID,Type,SKU,Name,Published,Short description,Description,Stock,Weight (lbs),Sale price,Regular price,"
    "Categories,Tags,Images,Parent,Grouped products,External URL,Button text,Brands,"
    "Attribute 1 name,Attribute 1 value(s)\n"
    '10,variable,TEE,V-Neck Tee,1,Short,"<p>Soft, <b>cotton</b></p>",,0.5,,,"Clothing > Tees, Sale",summer,'
    '"https://img.example.com/tee-1.jpg, https://img.example.com/tee-2.jpg",,,,,Acme,Color,"Red, Blue"\n'
    "11,variation,TEE-RED,V-Neck Tee - Red,1,,,5,,15,20,,,,TEE,,,,,Color,Red\n"
    "12,variation,TEE-BLUE,V-Neck Tee - Blue,1,,,3,1.5,,20,,,https://img.example.com/tee-blue.jpg,id:10,,,,,"
    "Color,Blue\n"
    '13,"simple, downloadable, virtual",,Album,0,,Music,,,,9.99,"Music\\, Film",,,,,,,,,\n'
    '14,grouped,SET,Tee Set,1,,,,,,,Clothing,,,,"TEE-RED, TEE-BLUE",,,,,\n'
    "15,external,PENNANT,Pennant,1,,,,,,11.05,Decor,,,,,https://shop.example.com/p,Buy there,,,\n"
    "16,simple,MUG,Mug,-1,,,7,12,,,Kitchen,,,,,,,,,\n"
)
